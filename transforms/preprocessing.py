"""The tf.Transform preprocessing_fn, built from a dataset spec.

`make_preprocessing_fn(spec)` returns a function of the raw input tensors that
computes the spec's derived columns, applies each feature's chain of steps,
passes the label through, and adds the outputs of the spec's optional custom
`preprocessing_fn` (the escape hatch). TensorFlow is imported inside these
functions, never at module import time.

The label's output depends on spec.label_kind: a float for regression and for
a binary 0/1 label; for a label with classes (multiclass, or binary with a
positive_class) the classes are a vocabulary over train, stored as the asset
LABEL_VOCABULARY of the transform graph, and the output is the class id
(multiclass) or 1.0 for the positive class and 0.0 for the other (binary); a
class that train never saw gives UNSEEN_LABEL (-1), which the batch job turns
into a dead letter (transforms.analyze).

Raw inputs, one value per row: float -> tf.float32, int -> tf.int64, string ->
tf.string, timestamp -> tf.int64 seconds since the epoch (UTC). Optional columns
without a default arrive as SparseTensors and must go through fill_missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from schemas.spec import ColumnType, DatasetSpec, DatetimePart, DerivedOp, Feature, Kind


def raw_feature_spec(spec: DatasetSpec) -> dict[str, Any]:
    """tf.io feature spec of the raw columns as the transform graph receives them."""
    import tensorflow as tf

    dtypes = {
        ColumnType.FLOAT: tf.float32,
        ColumnType.INT: tf.int64,
        ColumnType.STRING: tf.string,
        ColumnType.TIMESTAMP: tf.int64,
    }
    feature_spec = {}
    for column in spec.columns:
        if column.required or column.default is not None:
            feature_spec[column.name] = tf.io.FixedLenFeature([], dtypes[column.type])
        else:
            feature_spec[column.name] = tf.io.VarLenFeature(dtypes[column.type])
    for aggregate in spec.aggregates:
        dtype = tf.int64 if aggregate.kind is Kind.INT else tf.float32
        feature_spec[aggregate.name] = tf.io.FixedLenFeature([], dtype)
    return feature_spec


# The label vocabulary's file in transform_fn/assets. A feature's vocabulary file
# takes the feature's name, which cannot contain a hyphen, so this one cannot
# clash (tf.Transform would turn a dot into an underscore, but keeps hyphens).
LABEL_VOCABULARY = "label-classes"
# The transformed label of a row whose class train never saw.
UNSEEN_LABEL = -1


class LabelClassesError(ValueError):
    """A run's label classes do not make the label the spec declares."""


def transform_label(spec: DatasetSpec, label):
    """The label's output for the trainer (see the module docstring)."""
    import tensorflow as tf
    import tensorflow_transform as tft

    if not spec.label_has_classes:
        return tf.cast(label, tf.float32)
    ids = tft.compute_and_apply_vocabulary(
        label,
        default_value=UNSEEN_LABEL,
        num_oov_buckets=0,
        vocab_filename=LABEL_VOCABULARY,
        name="label_vocabulary",
    )
    if spec.label_kind == "multiclass":
        return ids
    positive = tf.cast(tf.equal(label, spec.positive_class), tf.float32)
    return tf.where(ids == UNSEEN_LABEL, tf.constant(float(UNSEEN_LABEL)), positive)


def label_classes(spec: DatasetSpec, vocabulary: list[str] | None) -> list[str] | None:
    """The class names of the label in id order: what the model's outputs mean.

    `vocabulary` is the run's LABEL_VOCABULARY (None when the label has no
    classes). Regression: None. Binary 0/1: ['0', '1']. Binary with a
    positive_class: [the other class, the positive class], so that the id is
    the 0/1 target; raises LabelClassesError when train did not hold exactly
    the positive class and one other. Multiclass: the vocabulary (by train
    frequency, most frequent first).
    """
    kind = spec.label_kind
    if kind == "regression":
        return None
    if not spec.label_has_classes:
        return ["0", "1"]
    if vocabulary is None:
        raise LabelClassesError(f"the run has no label vocabulary ({LABEL_VOCABULARY})")
    if kind == "multiclass":
        return list(vocabulary)
    positive = str(spec.positive_class)
    others = [name for name in vocabulary if name != positive]
    if positive not in vocabulary or len(others) != 1:
        raise LabelClassesError(
            f"label {spec.label} is binary with positive_class {positive!r}, but train holds "
            f"the classes {', '.join(map(repr, vocabulary))}: it needs {positive!r} and exactly "
            "one other class (or declare label_kind: multiclass)"
        )
    return [others[0], positive]


def read_label_vocabulary(spec: DatasetSpec, transform_output_dir: str) -> list[str] | None:
    """The run's label vocabulary (see LABEL_VOCABULARY), None when the label has none."""
    if not spec.label_has_classes:
        return None
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(transform_output_dir)
    return [value.decode("utf-8") for value in output.vocabulary_by_name(LABEL_VOCABULARY)]


def load_custom_preprocessing_fn(reference: str) -> Callable[[dict], dict]:
    """Imports 'package.module:function'; raises ImportError/AttributeError clearly."""
    module_name, function_name = reference.split(":")
    module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise AttributeError(
            f"preprocessing_fn {reference!r}: {function_name} is not a function in {module_name}"
        )
    return function


def civil_from_days(days, where):
    """(year, month, day) of days since 1970-01-01, proleptic Gregorian.

    Works on NumPy arrays and TensorFlow tensors alike (pass np.where or tf.where):
    only floor division, floor modulo and where are used. Algorithm: H. Hinnant,
    "chrono-Compatible Low-Level Date Algorithms", civil_from_days.
    """
    z = days + 719468
    era = z // 146097
    day_of_era = z - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year_from_march = day_of_era - (
        365 * year_of_era + year_of_era // 4 - year_of_era // 100
    )
    month_from_march = (5 * day_of_year_from_march + 2) // 153
    day = day_of_year_from_march - (153 * month_from_march + 2) // 5 + 1
    month = where(month_from_march < 10, month_from_march + 3, month_from_march - 9)
    # `month * 0 + 1` rather than 1 keeps the operand's dtype, which TensorFlow needs.
    year = year_of_era + era * 400 + where(month <= 2, month * 0 + 1, month * 0)
    return year, month, day


def days_from_civil_january_first(year):
    """Days since 1970-01-01 of January 1st of `year` (NumPy or TensorFlow)."""
    shifted = year - 1  # January counts as month 11 of the previous March-based year
    era = shifted // 400
    year_of_era = shifted - era * 400
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + 306
    return era * 146097 + day_of_era - 719468


def days_from_civil(year, month, day, where):
    """Days since 1970-01-01 of a proleptic Gregorian date (NumPy or TensorFlow).

    Algorithm: H. Hinnant, "chrono-Compatible Low-Level Date Algorithms",
    days_from_civil; the inverse of civil_from_days.
    """
    # `month * 0 + 1` rather than 1 keeps the operand's dtype, which TensorFlow needs.
    shifted_year = year - where(month <= 2, month * 0 + 1, month * 0)
    era = shifted_year // 400
    year_of_era = shifted_year - era * 400
    month_from_march = where(month > 2, month - 3, month + 9)
    day_of_year = (153 * month_from_march + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def datetime_part(seconds, part: DatetimePart, where):
    """A calendar part of UTC epoch seconds (NumPy or TensorFlow int64)."""
    days = seconds // 86400
    if part is DatetimePart.HOUR:
        return (seconds // 3600) % 24
    if part is DatetimePart.MINUTE:
        return (seconds // 60) % 60
    if part is DatetimePart.DAY_OF_WEEK:
        return (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    year, month, day = civil_from_days(days, where)
    if part is DatetimePart.YEAR:
        return year
    if part is DatetimePart.MONTH:
        return month
    if part is DatetimePart.DAY_OF_MONTH:
        return day
    if part is DatetimePart.DAY_OF_YEAR:
        return days - days_from_civil_january_first(year) + 1
    raise ValueError(f"unknown datetime part {part}")


def _as_string(tensor):
    import tensorflow as tf

    return tensor if tensor.dtype == tf.string else tf.strings.as_string(tensor)


def _derive(op: DerivedOp, values: list):
    import tensorflow as tf

    values = [tf.cast(value, tf.float32) for value in values]
    if op is DerivedOp.ADD:
        return tf.add_n(values)
    if op is DerivedOp.SUBTRACT:
        return values[0] - values[1]
    if op is DerivedOp.MULTIPLY:
        result = values[0]
        for value in values[1:]:
            result = result * value
        return result
    if op is DerivedOp.DIVIDE:
        # Division by zero gives 0 rather than inf, so one zero cannot poison the
        # train-split statistics (means, quantiles) of everything downstream.
        return tf.math.divide_no_nan(values[0], values[1])
    if op is DerivedOp.NORM:
        return tf.sqrt(tf.add_n([value * value for value in values]))
    raise ValueError(f"unknown derived op {op}")


def _apply_step(step, value, feature: Feature, inputs: list):
    import tensorflow as tf
    import tensorflow_transform as tft

    name = feature.name
    if step.type == "passthrough":
        return value
    if step.type == "fill_missing":
        if isinstance(value, tf.SparseTensor):
            batch_size = tf.shape(value, out_type=tf.int64)[0]
            dense = tf.sparse.to_dense(
                tf.sparse.reset_shape(value, [batch_size, 1]),
                default_value=tf.constant(step.value, dtype=value.dtype),
            )
            return tf.reshape(dense, [-1])
        return value
    if step.type == "scale_to_z_score":
        return tft.scale_to_z_score(tf.cast(value, tf.float32), name=f"{name}_z_score")
    if step.type == "scale_to_0_1":
        return tft.scale_to_0_1(tf.cast(value, tf.float32), name=f"{name}_0_1")
    if step.type == "log1p":
        # Signed log1p: equal to log1p for x >= 0 and defined (odd) for x < 0, so a
        # negative value cannot turn into NaN and poison the analyzers.
        value = tf.cast(value, tf.float32)
        return tf.sign(value) * tf.math.log1p(tf.abs(value))
    if step.type == "clip":
        value = tf.cast(value, tf.float32)
        low = float("-inf") if step.min is None else step.min
        high = float("inf") if step.max is None else step.max
        return tf.clip_by_value(value, low, high)
    if step.type == "vocabulary":
        return tft.compute_and_apply_vocabulary(
            value,
            top_k=step.top_k,
            frequency_threshold=step.frequency_threshold,
            num_oov_buckets=step.num_oov_buckets,
            vocab_filename=name,
            name=f"{name}_vocabulary",
        )
    if step.type == "bucketize":
        return tft.bucketize(tf.cast(value, tf.float32), step.num_buckets, name=f"{name}_bucketize")
    if step.type == "hash":
        return tf.strings.to_hash_bucket_fast(_as_string(value), step.hash_buckets)
    if step.type == "datetime":
        return datetime_part(tf.cast(value, tf.int64), step.part, tf.where)
    if step.type == "cross":
        joined = tf.strings.join([_as_string(tensor) for tensor in inputs], separator="\x1f")
        return tf.strings.to_hash_bucket_fast(joined, step.hash_buckets)
    raise ValueError(f"feature {name}: unknown step {step.type}")


class PreprocessingFnError(ValueError):
    """Building the transform graph failed; names the feature or custom function
    and the inputs involved."""


def make_preprocessing_fn(spec: DatasetSpec) -> Callable[[dict], dict]:
    """Builds the preprocessing_fn for tf.Transform from the spec."""
    custom_fn = (
        load_custom_preprocessing_fn(spec.preprocessing_fn) if spec.preprocessing_fn else None
    )

    def preprocessing_fn(inputs: dict) -> dict:
        import tensorflow as tf

        values = dict(inputs)
        for derived in spec.derived:
            values[derived.name] = _derive(derived.op, [values[n] for n in derived.inputs])
        # The custom function sees raw and derived columns, not the declared features.
        raw_and_derived = dict(values)
        outputs = {}
        for feature in spec.features:
            feature_inputs = [values[name] for name in feature.input_names]
            value = feature_inputs[0]
            # The scope puts the feature's name into the name of every op it
            # builds, so an error raised by the graph at run time names it too.
            with tf.name_scope(feature.name):
                for step in feature.transform:
                    try:
                        value = _apply_step(step, value, feature, feature_inputs)
                    except Exception as error:
                        raise PreprocessingFnError(
                            f"feature {feature.name} (from {', '.join(feature.input_names)}): "
                            f"step {step.type} failed: {type(error).__name__}: {error}"
                        ) from error
            # Later features may build on this one (e.g. a cross of bucketized values).
            values[feature.name] = outputs[feature.name] = value
        with tf.name_scope("label"):
            outputs[spec.label] = transform_label(spec, inputs[spec.label])
        if custom_fn is not None:
            try:
                with tf.name_scope("custom_preprocessing_fn"):
                    extra = custom_fn(raw_and_derived)
            except Exception as error:
                raise PreprocessingFnError(
                    f"preprocessing_fn {spec.preprocessing_fn} raised {type(error).__name__}: "
                    f"{error}; its inputs were {', '.join(sorted(raw_and_derived))}"
                ) from error
            if not isinstance(extra, dict):
                raise TypeError(f"preprocessing_fn {spec.preprocessing_fn} must return a dict")
            clashes = sorted(set(extra) & set(outputs))
            if clashes:
                raise ValueError(
                    f"preprocessing_fn {spec.preprocessing_fn} returns feature(s) "
                    f"{', '.join(clashes)} that the spec already declares"
                )
            outputs.update(extra)
        return outputs

    return preprocessing_fn
