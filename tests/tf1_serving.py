"""Running an export the way TensorFlow Serving and Vertex AI do (TF1: restore the
variables from the checkpoint, run the signature's graph): through
`saved_model_cli run` in a subprocess, or in a tf.compat.v1.Session.

The inputs come from JSON instances through trainer.predict's own path (the
batch job's validator, then signature_inputs), so that a test compares the two
loaders on exactly the tensors trainer.predict feeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np


def signature_feed(export_dir: str, instances: list[dict]) -> dict[str, np.ndarray]:
    """{input name: array} of the serving_default signature for `instances`,
    which must all be valid (a refused one would shift the rows)."""
    import tensorflow as tf

    from trainer.export import load_export_spec
    from trainer.predict import JsonInstances, serving_spec, signature_inputs
    from transforms.validation import InputValidator

    spec = serving_spec(load_export_spec(export_dir))
    validated = InputValidator(spec, JsonInstances(spec)).parse(
        [(f"instance {i}", json.dumps(row)) for i, row in enumerate(instances)]
    )
    assert not validated.dead_letters, validated.dead_letters
    signature = tf.saved_model.load(export_dir).signatures["serving_default"]
    _, input_specs = signature.structured_input_signature
    inputs = signature_inputs(validated.valid, input_specs)
    return {name: tensor.numpy() for name, tensor in inputs.items()}


def input_exprs(feed: dict[str, np.ndarray]) -> str:
    """saved_model_cli's --input_exprs: `name=[...]` Python literals joined by ';'."""
    expressions = []
    for name, values in sorted(feed.items()):
        items = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values.tolist()]
        expression = f"{name}={items!r}"
        # saved_model_cli splits the argument on ';' before it parses a literal.
        assert ";" not in expression, expression
        expressions.append(expression)
    return ";".join(expressions)


def saved_model_cli_command(export_dir: str, signature: str, exprs: str, outdir: str) -> list:
    """The command line (TensorFlow's own console script, beside this interpreter)."""
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return [
        script, "run", "--dir", export_dir, "--tag_set", "serve", "--signature_def", signature,
        "--input_exprs", exprs, "--outdir", outdir, "--overwrite",
    ]  # fmt: skip


def run_saved_model_cli(export_dir: str, feed: dict, outdir: str) -> dict[str, np.ndarray]:
    """serving_default's outputs as saved_model_cli writes them (one OUTDIR/<key>.npy each)."""
    command = saved_model_cli_command(export_dir, "serving_default", input_exprs(feed), outdir)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # String outputs (class names) are object arrays, which np.save pickles.
    return {
        name[: -len(".npy")]: np.load(os.path.join(outdir, name), allow_pickle=True)
        for name in os.listdir(outdir)
        if name.endswith(".npy")
    }


def run_in_tf1_session(export_dir: str, signatures: dict[str, dict]) -> dict[str, dict]:
    """{signature: {output key: array}} for {signature: feed}, from one TF1 load."""
    import tensorflow as tf

    results = {}
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
        for name, feed in signatures.items():
            signature = meta_graph.signature_def[name]
            assert sorted(signature.inputs) == sorted(feed), name
            tensors = {key: info.name for key, info in signature.outputs.items()}
            results[name] = session.run(
                tensors, {signature.inputs[key].name: value for key, value in feed.items()}
            )
    return results


def serialized_examples(feed: dict[str, np.ndarray]) -> np.ndarray:
    """serving_tf_example's input for the rows of a serving_default feed: an
    optional column whose mask is False is left out of its example."""
    import tensorflow as tf

    from trainer.export import PRESENT_SUFFIX

    def feature(value) -> tf.train.Feature:
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        if isinstance(value, np.integer):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))

    columns = [name for name in feed if not name.endswith(PRESENT_SUFFIX)]
    rows = len(next(iter(feed.values())))
    examples = []
    for row in range(rows):
        named = {
            name: feature(feed[name][row])
            for name in columns
            if feed.get(name + PRESENT_SUFFIX, [True] * rows)[row]
        }
        example = tf.train.Example(features=tf.train.Features(feature=named))
        examples.append(example.SerializeToString())
    return np.array(examples, dtype=object)
