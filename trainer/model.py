"""Wide-and-deep Keras model over a preprocessing run's transformed examples.

The model is built from the run itself, not from column lists: the manifest
names the label and each feature's kind, and the transformed schema gives the
size of every vocabulary. Categorical features get an embedding (deep) and a
one-weight-per-id linear term (wide); numeric features feed the deep tower.
The manifest's label_kind, from the spec, chooses regression (MSE, RMSE) or, for
an int label allowed only 0 and 1, binary classification (cross-entropy, AUC).
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
    binary: bool


def load_run(data_dir: str) -> RunInfo:
    """Reads the manifest and transformed schema; refuses an incomplete run."""
    import tensorflow_transform as tft

    manifest_path = RunLayout(data_dir).manifest_path
    if not os.path.isfile(manifest_path):
        raise DataDirError(f"{data_dir} has no {MANIFEST_NAME}: not a complete preprocessing run")
    with open(manifest_path) as handle:
        manifest = json.load(handle)
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
    # The spec decides: an int label allowed only 0 and 1 is a binary target.
    binary = manifest.get("label_kind") == "binary"
    return RunInfo(data_dir, manifest["label"], manifest["key_column"], tuple(features), binary)


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
        label = tf.cast(features.pop(run.label), tf.float32)
        return {f.name: features[f.name] for f in run.features}, label

    return dataset.map(split_label).prefetch(tf.data.AUTOTUNE)


def embedding_size(cardinality: int) -> int:
    # The usual fourth-root rule, capped so that 10,000-id crosses stay small.
    return max(2, min(32, math.ceil(4 * cardinality**0.25)))


def build_model(run: RunInfo, hidden_units: tuple[int, ...] = (64, 32)):
    import keras

    inputs, wide, deep = {}, [], []
    for feature in run.features:
        dtype = "int64" if feature.categorical else "float32"
        tensor = keras.Input(shape=(), name=feature.name, dtype=dtype)
        inputs[feature.name] = tensor
        if feature.categorical:
            ids = keras.ops.clip(tensor, 0, feature.cardinality - 1)
            wide.append(
                keras.layers.Embedding(feature.cardinality, 1, name=f"wide_{feature.name}")(ids)
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
    deep_out = keras.layers.Dense(1, name="deep_out")(hidden)
    logit = keras.layers.Add(name="wide_and_deep")([deep_out, *wide]) if wide else deep_out
    output = keras.ops.squeeze(logit, -1)
    if run.binary:
        output = keras.ops.sigmoid(output)
    model = keras.Model(inputs=inputs, outputs=output)
    if run.binary:
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="binary_crossentropy",
            metrics=[keras.metrics.AUC(name="auc")],
        )
    else:
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="mse",
            metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
        )
    return model
