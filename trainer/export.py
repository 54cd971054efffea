"""Serving export: a SavedModel that takes RAW features and applies the transform
graph inside, so that training and serving share one transformation.

Signatures of MODEL_DIR/export/:
- `serving_default`: one tensor per raw column (the label excluded), named and
  typed as in the CSV: the timestamp column is the CSV's text
  ('YYYY-MM-DD HH:MM:SS[ UTC]'), an empty string is a missing optional string,
  and aggregate columns come with the request, as the streaming job computes
  them online.
- `serving_tf_example`: serialized tf.train.Examples of the raw features as the
  raw metadata describes them (the timestamp as int64 epoch seconds).

The tf.Transform layer is an attribute of the exported module, so its lookup
tables are tracked and initialise when the model loads.
"""

from __future__ import annotations

import json

from pipeline.layout import RunLayout

EXPORT_DIR_NAME = "export"


def export_serving_model(model, run, export_dir: str) -> str:
    import tensorflow as tf
    import tensorflow_transform as tft

    from transforms.preprocessing import parse_utc_timestamp

    tft_output = tft.TFTransformOutput(run.data_dir)
    raw_spec = {k: v for k, v in tft_output.raw_feature_spec().items() if k != run.label}
    with open(RunLayout(run.data_dir).manifest_path) as handle:
        timestamp_column = json.load(handle)["timestamp_column"]
    feature_names = [feature.name for feature in run.features]

    class ServingModule(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.transform_layer = tft_output.transform_features_layer()

        def _predict(self, raw: dict) -> dict:
            transformed = self.transform_layer(raw)
            return {"predictions": self.model({n: transformed[n] for n in feature_names})}

        def predict_columns(self, columns: dict) -> dict:
            raw = {}
            for name, spec in raw_spec.items():
                value = columns[name]
                if name == timestamp_column:
                    value = parse_utc_timestamp(value)
                if isinstance(spec, tf.io.VarLenFeature):
                    present = (
                        tf.not_equal(value, "")
                        if value.dtype == tf.string
                        else tf.ones_like(value, tf.bool)
                    )
                    rows = tf.where(present)
                    value = tf.SparseTensor(
                        tf.concat([rows, tf.zeros_like(rows)], axis=1),
                        tf.boolean_mask(value, present),
                        [tf.shape(value, out_type=tf.int64)[0], 1],
                    )
                raw[name] = value
            return self._predict(raw)

        def predict_examples(self, examples) -> dict:
            return self._predict(tf.io.parse_example(examples, raw_spec))

    module = ServingModule()
    column_specs = {
        name: tf.TensorSpec([None], tf.string if name == timestamp_column else spec.dtype, name)
        for name, spec in raw_spec.items()
    }
    signatures = {
        "serving_default": tf.function(module.predict_columns).get_concrete_function(column_specs),
        "serving_tf_example": tf.function(module.predict_examples).get_concrete_function(
            tf.TensorSpec([None], tf.string, "examples")
        ),
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    return export_dir
