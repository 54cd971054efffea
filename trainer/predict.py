"""Local prediction with the exported serving model.

    python -m trainer.predict --model_dir M --json_instances FILE.jsonl

Each input line is one JSON object of raw columns (CSV names; aggregate columns
included). An instance means what the same row means to the batch job: it is
validated by the batch job's own validator with the run's spec (kept in the
export), so an optional column may be absent, `null` or one of the spec's null
tokens (its default, or missing), a timestamp may be any text the CSV reader
takes or integer epoch seconds as a JSON number, and a value the batch job
refuses is refused here. Prints one JSON object per input line:
{"predictions": value} (regression), {"predicted_class": name, "probabilities":
{class: probability, ...}} (classification, classes in id order), or
{"error": reason} for an instance the batch job would make a dead letter (then
the exit code is 1). Needs only TensorFlow: the model is loaded with
tf.saved_model.load from M/export/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

BATCH = 1024


def serving_spec(spec, aggregates_in_instance: bool = True):
    """The spec of what a client sends: the raw columns without the label, and
    (`aggregates_in_instance`) the aggregates as required numeric columns (the
    client computes them, as the streaming job does); without them, the
    prediction service (serving/) looks them up in the online store. Its event
    time is the instance's own column, never a Pub/Sub attribute."""
    from schemas.spec import Column, ColumnType, Kind

    columns = [column for column in spec.columns if column.name != spec.label]
    if aggregates_in_instance:
        columns += [
            Column(name=a.name, type=ColumnType.INT if a.kind is Kind.INT else ColumnType.FLOAT)
            for a in spec.aggregates
        ]
    update = {"columns": columns, "aggregates": [], "timestamp_attribute": None}
    return spec.model_copy(update=update)


class JsonInstances:
    """Input adapter (transforms.records) for `(source, JSON text)` instances: the
    streaming job's JSON rules (transforms.messages: a number column takes a JSON
    number, a timestamp a string or integer epoch seconds, null, an absent field
    or a string that is one of the column's null tokens is missing), then the
    field texts that the validator types as CSV fields. Pub/Sub's own adapter
    is not reused: it takes the record key and event time from message
    attributes, which an instance has not."""

    kind = "json_instances"

    def __init__(self, spec):
        self.spec = spec
        self.missing_tokens = [spec.missing_tokens(column) for column in spec.columns]

    def fields(self, instances: Sequence[tuple[str, str]]) -> list:
        import pyarrow as pa

        from schemas.spec import RECORD_KEY
        from transforms.messages import document_field_texts
        from transforms.records import Fields, dead_letter

        sources, texts, rows, rejected = [], [], [], []
        for source, text in instances:
            try:
                document = json.loads(text)
            except json.JSONDecodeError as error:
                rejected.append(dead_letter(source, text, f"invalid JSON: {error.msg}"))
                continue
            if not isinstance(document, dict):
                rejected.append(dead_letter(source, text, "an instance must be a JSON object"))
                continue
            fields, problem = document_field_texts(
                self.spec.columns, self.missing_tokens, document, _by_either_name
            )
            if problem is not None:
                rejected.append(dead_letter(source, text, ": ".join(problem)))
                continue
            sources.append(source)
            texts.append(text)
            rows.append(fields)
        # A spec without key_column: the validator wants the derived key, which
        # serving never uses; the instance's source stands in for it.
        extra = {RECORD_KEY: pa.array(sources, pa.string())} if self.spec.derives_record_key else {}
        return [
            Fields.from_rows(sources, texts, rows, len(self.spec.columns), rejected, extra=extra)
        ]


def _by_either_name(document: dict, column):
    """By the spec's name, or by the input's own (a CSV header text)."""
    return document.get(column.name, document.get(column.source_name))


def signature_inputs(valid, input_specs: dict) -> dict:
    """Tensors for the serving signature from validated rows (a RecordBatch):
    each column with its nulls as placeholders, and each `<column>__present`
    mask from the column's validity."""
    import pyarrow as pa
    import tensorflow as tf

    from trainer.export import PRESENT_SUFFIX

    inputs = {}
    for name, tensor_spec in input_specs.items():
        if name.endswith(PRESENT_SUFFIX) and name not in valid.schema.names:
            column = valid.column(name[: -len(PRESENT_SUFFIX)])
            inputs[name] = tf.constant(column.is_valid().to_pylist(), dtype=tf.bool)
            continue
        column = valid.column(name)
        if column.null_count:
            # Where the value is missing, its presence mask is False and the
            # placeholder is never read.
            placeholder = "" if pa.types.is_string(column.type) else 0
            column = column.fill_null(pa.scalar(placeholder, column.type))
        inputs[name] = tf.constant(column.to_pylist(), dtype=tensor_spec.dtype)
    return inputs


class ServingModel:
    """An export loaded for prediction: the run's spec, the validator of JSON
    instances, and the `serving_default` signature. `aggregates_in_instance`
    as in `serving_spec`; without them, `outputs` takes the aggregate columns
    separately. Thread-safe: the validator keeps no state between batches."""

    def __init__(self, export_dir: str, aggregates_in_instance: bool = True):
        import tensorflow as tf

        from trainer.export import load_export_spec
        from transforms.validation import InputValidator

        self.spec = load_export_spec(export_dir)
        self.instance_spec = serving_spec(self.spec, aggregates_in_instance)
        self.validator = InputValidator(self.instance_spec, JsonInstances(self.instance_spec))
        # Kept: the loaded object owns the resources (lookup tables) that the
        # signature captures, and a long-lived service must not let it go.
        self.loaded = tf.saved_model.load(export_dir)
        self.signature = self.loaded.signatures["serving_default"]
        _, self.input_specs = self.signature.structured_input_signature

    def validate(self, instances: Sequence[tuple[str, str]]):
        """(source, JSON text) instances -> a ValidatedBatch (transforms.validation)."""
        return self.validator.parse(instances)

    def outputs(self, valid, aggregate_columns: dict | None = None) -> dict:
        """The signature's outputs (NumPy arrays) for validated rows, with
        `aggregate_columns` ({name: pyarrow array}) appended to them."""
        for name, values in (aggregate_columns or {}).items():
            valid = valid.append_column(name, values)
        outputs = self.signature(**signature_inputs(valid, self.input_specs))
        return {name: tensor.numpy() for name, tensor in outputs.items()}


def _prediction(outputs: dict, index: int) -> dict:
    if "probabilities" not in outputs:
        return {"predictions": float(outputs["predictions"][index])}
    names = [name.decode("utf-8") for name in outputs["classes"][index]]
    probabilities = [float(p) for p in outputs["probabilities"][index]]
    return {
        "predicted_class": outputs["predicted_class"][index].decode("utf-8"),
        "probabilities": dict(zip(names, probabilities, strict=True)),
    }


def predict_instances(export_dir: str, lines: Sequence[str], source: str = "instance") -> list:
    """One result dict per JSON line (see the module docstring)."""
    model = ServingModel(export_dir)
    results: list[dict] = []
    for start in range(0, len(lines), BATCH):
        chunk = [
            (f"{source} {start + i + 1}", line)
            for i, line in enumerate(lines[start : start + BATCH])
        ]
        validated = model.validate(chunk)
        errors = {letter["source"]: letter["reason"] for letter in validated.dead_letters}
        outputs = model.outputs(validated.valid) if validated.valid.num_rows else {}
        row = 0
        for name, _ in chunk:
            if name in errors:
                results.append({"error": errors[name]})
            else:
                results.append(_prediction(outputs, row))
                row += 1
    return results


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
        lines = [line for line in handle if line.strip()]
    results = predict_instances(export_dir, lines)
    for result in results:
        print(json.dumps(result))
    refused = sum("error" in result for result in results)
    if refused:
        print(f"error: {refused} of {len(results)} instance(s) refused", file=sys.stderr)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
