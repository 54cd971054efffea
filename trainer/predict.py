"""Local prediction with the exported serving model.

    python -m trainer.predict --model_dir M --json_instances FILE.jsonl

Each input line is one JSON object of raw columns (CSV names; the timestamp as
its text; aggregate columns included). Prints one JSON object per line:
{"predictions": value}. Needs only TensorFlow: the model is loaded with
tf.saved_model.load from M/export/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

BATCH = 1024


def predict_instances(export_dir: str, instances: list[dict]) -> list[float]:
    import tensorflow as tf

    signature = tf.saved_model.load(export_dir).signatures["serving_default"]
    _, input_specs = signature.structured_input_signature
    predictions: list[float] = []
    for start in range(0, len(instances), BATCH):
        chunk = instances[start : start + BATCH]
        inputs = {}
        for name, spec in input_specs.items():
            missing = "" if spec.dtype == tf.string else None
            values = [instance.get(name, missing) for instance in chunk]
            if any(value is None for value in values):
                raise ValueError(f"instances lack a value for '{name}'")
            inputs[name] = tf.constant(values, dtype=spec.dtype)
        output = signature(**inputs)["predictions"].numpy()
        predictions.extend(float(value) for value in output.reshape(len(chunk)))
    return predictions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="Directory written by trainer.task.")
    parser.add_argument("--json_instances", required=True, help="JSON lines of raw columns.")
    args = parser.parse_args(argv)
    export_dir = os.path.join(args.model_dir, "export")
    if not os.path.isdir(export_dir):
        print(f"error: {export_dir} does not exist; run trainer.task first", file=sys.stderr)
        return 2
    with open(args.json_instances) as handle:
        instances = [json.loads(line) for line in handle if line.strip()]
    try:
        predictions = predict_instances(export_dir, instances)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for value in predictions:
        print(json.dumps({"predictions": value}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
