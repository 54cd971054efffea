"""Wide-and-deep Keras model over a preprocessing run's transformed examples.

The model is built from the run itself, not from column lists: the manifest
names the label and each feature's kind, and the transformed schema gives the
size of every vocabulary. Categorical features get an embedding (deep) and a
one-weight-per-id linear term (wide); numeric features feed the deep tower.
The manifest's label_kind, from the spec, chooses the head, loss and metrics:
- regression: one linear output, MSE loss, RMSE;
- binary: one sigmoid output (the positive class's probability), binary
  cross-entropy loss, AUC, log-loss and accuracy;
- multiclass: one softmax output per class (the wide part has one weight per id
  and class), sparse categorical cross-entropy loss, accuracy and log-loss.
The class names, in id order, are the manifest's label_classes.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os

from pipeline.layout import MANIFEST_NAME, RunLayout


class DataDirError(ValueError):
    """The data directory is not a complete preprocessing run."""


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    name: str
    cardinality: int | None  # None for numeric features

    @property
    def categorical(self) -> bool:
        return self.cardinality is not None


@dataclasses.dataclass(frozen=True)
class RunInfo:
    data_dir: str
    label: str
    key_column: str
    features: tuple[FeatureInfo, ...]
    label_kind: str  # regression | binary | multiclass
    # Class names in id order (binary: [negative, positive]); empty for regression.
    label_classes: tuple[str, ...] = ()

    @property
    def binary(self) -> bool:
        return self.label_kind == "binary"

    @property
    def multiclass(self) -> bool:
        return self.label_kind == "multiclass"


def load_run(data_dir: str) -> RunInfo:
    """Reads the manifest and transformed schema; refuses an incomplete run."""
    import tensorflow_transform as tft

    manifest_path = RunLayout(data_dir).manifest_path
    if not os.path.isfile(manifest_path):
        raise DataDirError(f"{data_dir} has no {MANIFEST_NAME}: not a complete preprocessing run")
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    if not os.path.isfile(RunLayout(data_dir).spec_path):
        # The export validates serving instances with the run's spec.
        raise DataDirError(f"{data_dir} has no spec.json: made before it was written; rerun it")
    schema = tft.TFTransformOutput(data_dir).transformed_metadata.schema
    domains = {f.name: f.int_domain for f in schema.feature if f.HasField("int_domain")}
    features = []
    for name, info in sorted(manifest["features"].items()):
        cardinality = info["cardinality"]
        if info["kind"] == "categorical" and cardinality is None:
            if name not in domains:
                raise DataDirError(f"feature {name} is categorical but has no id range")
            cardinality = int(domains[name].max) + 1
        features.append(FeatureInfo(name, cardinality if info["kind"] == "categorical" else None))
    label_kind = manifest.get("label_kind", "regression")
    classes = tuple(manifest.get("label_classes") or ())
    if label_kind == "multiclass" and len(classes) < 2:
        raise DataDirError(
            f"the label {manifest['label']} is multiclass but the run lists "
            f"{len(classes)} class(es) in label_classes: nothing to tell apart"
        )
    if label_kind == "binary" and not classes:
        classes = ("0", "1")  # runs from before label_classes
    return RunInfo(
        data_dir, manifest["label"], manifest["key_column"], tuple(features), label_kind, classes
    )


def make_dataset(run: RunInfo, split: str, batch_size: int, shuffle: bool, repeat: bool):
    """(features, label) batches from OUTPUT/<split>/*.tfrecord.gz."""
    import tensorflow as tf
    import tensorflow_transform as tft

    files = sorted(glob.glob(os.path.join(run.data_dir, split, "*.tfrecord.gz")))
    if not files:
        raise DataDirError(f"{run.data_dir}/{split} has no TFRecord files")
    feature_spec = tft.TFTransformOutput(run.data_dir).transformed_feature_spec()
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if shuffle:
        dataset = dataset.shuffle(10_000, seed=1, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size).map(
        lambda records: tf.io.parse_example(records, feature_spec),
        num_parallel_calls=tf.data.AUTOTUNE,
    )

    def split_label(features):
        features = dict(features)
        # Class ids stay integers for the sparse categorical loss.
        label = tf.cast(features.pop(run.label), tf.int64 if run.multiclass else tf.float32)
        return {f.name: features[f.name] for f in run.features}, label

    return dataset.map(split_label).prefetch(tf.data.AUTOTUNE)


def embedding_size(cardinality: int) -> int:
    # The usual fourth-root rule, capped so that 10,000-id crosses stay small.
    return max(2, min(32, math.ceil(4 * cardinality**0.25)))


def build_model(run: RunInfo, hidden_units: tuple[int, ...] = (64, 32)):
    import keras

    # One logit per class for a multiclass label; else one.
    outputs = len(run.label_classes) if run.multiclass else 1
    inputs, wide, deep = {}, [], []
    for feature in run.features:
        dtype = "int64" if feature.categorical else "float32"
        tensor = keras.Input(shape=(), name=feature.name, dtype=dtype)
        inputs[feature.name] = tensor
        if feature.categorical:
            ids = keras.ops.clip(tensor, 0, feature.cardinality - 1)
            wide.append(
                keras.layers.Embedding(feature.cardinality, outputs, name=f"wide_{feature.name}")(
                    ids
                )
            )
            deep.append(
                keras.layers.Embedding(
                    feature.cardinality,
                    embedding_size(feature.cardinality),
                    name=f"embed_{feature.name}",
                )(ids)
            )
        else:
            deep.append(keras.ops.expand_dims(keras.ops.cast(tensor, "float32"), -1))
    hidden = keras.layers.Concatenate(name="deep_inputs")(deep)
    for units in hidden_units:
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    deep_out = keras.layers.Dense(outputs, name="deep_out")(hidden)
    logit = keras.layers.Add(name="wide_and_deep")([deep_out, *wide]) if wide else deep_out
    if run.multiclass:
        output = keras.ops.softmax(logit, axis=-1)
    else:
        output = keras.ops.squeeze(logit, -1)
        if run.binary:
            output = keras.ops.sigmoid(output)
    model = keras.Model(inputs=inputs, outputs=output)
    loss, metrics = _loss_and_metrics(run)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=metrics)
    return model


def _loss_and_metrics(run: RunInfo) -> tuple[str, list]:
    import keras

    if run.binary:
        return "binary_crossentropy", [
            keras.metrics.AUC(name="auc"),
            keras.metrics.BinaryCrossentropy(name="log_loss"),
            keras.metrics.BinaryAccuracy(name="accuracy"),
        ]
    if run.multiclass:
        return "sparse_categorical_crossentropy", [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseCategoricalCrossentropy(name="log_loss"),
        ]
    return "mse", [keras.metrics.RootMeanSquaredError(name="rmse")]
