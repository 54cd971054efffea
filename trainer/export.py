"""Serving export: a SavedModel that takes RAW features and applies the transform
graph inside, so that training and serving share one transformation.

Signatures of MODEL_DIR/export/:
- `serving_default`: one tensor per raw column (the label excluded), in the
  type the batch job gives the column after validation: float32, int64,
  string, and a timestamp as int64 seconds since the epoch (UTC); aggregate
  columns come with the request, as the streaming job computes them online.
  Every optional column also takes a bool tensor `<column>__present`: where it
  is False the value is missing, whatever the column's own tensor holds, and
  means what an empty field means in the batch job: the column's default when
  the spec declares one, else a missing value that the feature's fill_missing
  fills inside the transform graph. (Signatures take dense tensors only, so a
  presence mask is what makes a missing number expressible.)
- `serving_tf_example`: serialized tf.train.Examples of the raw features as the
  raw metadata describes them (the timestamp as int64 epoch seconds); an
  optional column may be left out of an example, with the same meaning.

Outputs: regression: `predictions`. Classification: `probabilities` [batch,
classes] in class-id order, `classes` (the class names, the same for every
row), `predicted_class` and `class_ids` (the most probable); a binary model
also gives `predictions`, the probability of the positive class.

trainer.predict turns JSON instances into these inputs through the batch
job's own validator (timestamps in any form the CSV reader takes, nulls, the
spec's null tokens, defaults), with the run's spec, which the export keeps in
assets.extra/spec.json.

Why ExportArchive: TensorFlow Serving, Vertex AI and saved_model_cli load a
SavedModel the TF1 way, restoring the variables of the signature's graph from
the checkpoint, which finds no Keras 3 variable saved as an attribute of a
plain tf.Module ("Could not find variable ...") but every variable that
keras.export.ExportArchive saves for its endpoints. The archive also tracks the
tf.Transform layer, so its lookup tables and vocabulary files are saved and
initialise when the model loads, the TF1 way or with tf.saved_model.load.
"""

from __future__ import annotations

import json
import os

from pipeline.layout import RunLayout

EXPORT_DIR_NAME = "export"
# Where the export keeps the run's spec (assets.extra is TensorFlow Serving's
# place for files that serving clients, not the graph, read).
SPEC_RELPATH = os.path.join("assets.extra", "spec.json")
# Suffix of the presence mask input of an optional column.
PRESENT_SUFFIX = "__present"


def load_run_spec(data_dir: str):
    """The DatasetSpec of a preprocessing run (its spec.json), validated again."""
    from schemas.spec import parse_spec
    from trainer.model import DataDirError

    path = RunLayout(data_dir).spec_path
    if not os.path.isfile(path):
        raise DataDirError(f"{data_dir} has no spec.json: rerun pipeline.preprocess")
    with open(path) as handle:
        return parse_spec(json.load(handle), source=path)


def load_export_spec(export_dir: str):
    """The DatasetSpec that an export keeps (see SPEC_RELPATH)."""
    from schemas.spec import parse_spec

    path = os.path.join(export_dir, SPEC_RELPATH)
    with open(path) as handle:
        return parse_spec(json.load(handle), source=path)


def optional_columns(spec, raw_columns) -> list:
    """The spec's optional columns among `raw_columns`: those with a presence mask."""
    return [c for c in spec.columns if not c.required and c.name in raw_columns]


def _classification_outputs(scores, label_kind: str, class_names: tuple[str, ...]) -> dict:
    import tensorflow as tf

    # A binary model scores the positive class; its probabilities are [1 - p, p].
    binary = label_kind == "binary"
    probabilities = tf.stack([1.0 - scores, scores], axis=1) if binary else scores
    names = tf.constant(list(class_names), dtype=tf.string)
    class_ids = tf.argmax(probabilities, axis=1)
    outputs = {
        "probabilities": probabilities,
        "classes": tf.tile(names[tf.newaxis, :], [tf.shape(probabilities)[0], 1]),
        "predicted_class": tf.gather(names, class_ids),
        "class_ids": class_ids,
    }
    if label_kind == "binary":
        outputs["predictions"] = scores
    return outputs


def export_serving_model(model, run, export_dir: str) -> str:
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    spec = load_run_spec(run.data_dir)
    tft_output = tft.TFTransformOutput(run.data_dir)
    raw_spec = {k: v for k, v in tft_output.raw_feature_spec().items() if k != run.label}
    optional = {column.name: column for column in optional_columns(spec, raw_spec)}
    for name in optional:
        if name + PRESENT_SUFFIX in raw_spec:
            raise ValueError(f"column {name + PRESENT_SUFFIX} clashes with {name}'s presence mask")
    # An absent optional column of a tf.Example takes its default, as an empty
    # field does in the batch job; without a default it is a VarLenFeature anyway.
    example_spec = {
        name: tf.io.FixedLenFeature([], feature.dtype, default_value=optional[name].default)
        if name in optional and isinstance(feature, tf.io.FixedLenFeature)
        else feature
        for name, feature in raw_spec.items()
    }
    feature_names = [feature.name for feature in run.features]
    label_kind, class_names = run.label_kind, run.label_classes

    transform_layer = tft_output.transform_features_layer()

    def predict(raw: dict) -> dict:
        transformed = transform_layer(raw)
        scores = model({n: transformed[n] for n in feature_names})
        if label_kind == "regression":
            return {"predictions": scores}
        return _classification_outputs(scores, label_kind, class_names)

    def predict_columns(columns: dict) -> dict:
        raw = {}
        for name, feature in raw_spec.items():
            value = columns[name]
            if name in optional:
                present = columns[name + PRESENT_SUFFIX]
                if isinstance(feature, tf.io.VarLenFeature):
                    rows = tf.where(present)
                    value = tf.SparseTensor(
                        tf.concat([rows, tf.zeros_like(rows)], axis=1),
                        tf.boolean_mask(value, present),
                        [tf.shape(value, out_type=tf.int64)[0], 1],
                    )
                else:
                    default = tf.constant(optional[name].default, dtype=feature.dtype)
                    value = tf.where(present, value, default)
            raw[name] = value
        return predict(raw)

    def predict_examples(examples) -> dict:
        return predict(tf.io.parse_example(examples, example_spec))

    column_specs = {
        name: tf.TensorSpec([None], spec_.dtype, name) for name, spec_ in raw_spec.items()
    }
    for name in optional:
        column_specs[name + PRESENT_SUFFIX] = tf.TensorSpec([None], tf.bool, name + PRESENT_SUFFIX)
    archive = keras.export.ExportArchive()
    archive.track(model)
    # The endpoints capture the layer's lookup tables, which only track() adds
    # to the SavedModel (with their vocabulary files); without it the save fails
    # on an untracked resource.
    archive.track(transform_layer)
    archive.add_endpoint("serving_default", predict_columns, input_signature=[column_specs])
    archive.add_endpoint(
        "serving_tf_example",
        predict_examples,
        input_signature=[tf.TensorSpec([None], tf.string, "examples")],
    )
    archive.write_out(export_dir, verbose=False)
    os.makedirs(os.path.dirname(os.path.join(export_dir, SPEC_RELPATH)), exist_ok=True)
    with open(RunLayout(run.data_dir).spec_path) as source:
        document = source.read()
    with open(os.path.join(export_dir, SPEC_RELPATH), "w") as target:
        target.write(document)
    return export_dir
