"""Labels of every kind: the spec's label_kind and positive_class, the label's
encoding in the transform graph (exact values on a handful of rows), unseen
classes as dead letters, and the trainer's constant baselines."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from schemas.spec import SpecError, parse_spec
from tests.support import spec_document, test_pipeline


def label_document(label: dict, **fields) -> dict:
    """A spec document whose label is the column `label` (next to id, when, x)."""
    document = spec_document(label=label["name"], **fields)
    document["columns"] = [c for c in document["columns"] if c["name"] != "y"] + [label]
    return document


def problems_of(document: dict) -> list[str]:
    with pytest.raises(SpecError) as error:
        parse_spec(document)
    return error.value.problems


# --- the spec ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "fields", "kind"),
    [
        ({"name": "y", "type": "float"}, {}, "regression"),
        ({"name": "y", "type": "int"}, {}, "regression"),
        ({"name": "y", "type": "int", "allowed": [0, 1]}, {}, "binary"),
        ({"name": "y", "type": "int", "allowed": [1]}, {}, "binary"),
        ({"name": "y", "type": "int", "allowed": [0, 1, 2]}, {}, "regression"),
        ({"name": "y", "type": "int"}, {"positive_class": 7}, "binary"),
        ({"name": "y", "type": "string"}, {"positive_class": "yes"}, "binary"),
        ({"name": "y", "type": "string"}, {}, "multiclass"),
        ({"name": "y", "type": "int"}, {"label_kind": "multiclass"}, "multiclass"),
        (
            {"name": "y", "type": "int", "allowed": [0, 1]},
            {"label_kind": "regression"},
            "regression",
        ),
    ],
)
def test_label_kind_is_declared_or_inferred_from_the_label_column(label, fields, kind):
    spec = parse_spec(label_document(label, **fields))
    assert spec.label_kind == kind
    assert spec.label_has_classes == (kind == "multiclass" or "positive_class" in fields)


@pytest.mark.parametrize(
    ("label", "fields", "problem"),
    [
        (
            {"name": "y", "type": "string"},
            {"label_kind": "binary"},
            "positive_class: a binary string label needs the class that is 1",
        ),
        (
            {"name": "y", "type": "string"},
            {"label_kind": "regression"},
            "label_kind: regression label 'y' (string): a regression label must be float or int",
        ),
        (
            {"name": "y", "type": "float"},
            {"label_kind": "multiclass"},
            "label_kind: multiclass label 'y' (float): a multiclass label must be string or int",
        ),
        (
            {"name": "y", "type": "float"},
            {"label_kind": "binary"},
            "label_kind: binary label 'y' (float): a binary label must be int 0/1, or string "
            "or int with positive_class",
        ),
        (
            {"name": "y", "type": "int"},
            {"label_kind": "binary"},
            "label_kind: binary label 'y' (int): an int binary label needs allowed: [0, 1], "
            "or a positive_class",
        ),
        (
            {"name": "y", "type": "string", "allowed": ["yes", "no"]},
            {"positive_class": "maybe"},
            "positive_class: 'maybe' is not in the label's allowed values",
        ),
        (
            {"name": "y", "type": "string", "allowed": ["a", "b", "c"]},
            {"positive_class": "a"},
            "label_kind: binary label 'y' (string): a binary label takes two values, "
            "allowed lists 3",
        ),
        (
            {"name": "y", "type": "string"},
            {"positive_class": 1},
            "positive_class: 1 is not a string (the label column is string)",
        ),
        (
            {"name": "y", "type": "string"},
            {"label_kind": "multiclass", "positive_class": "a"},
            "positive_class: applies only to binary labels, the label is multiclass",
        ),
        (
            {"name": "y", "type": "float"},
            {"positive_class": 1},
            "positive_class: applies only to binary labels, the label is regression",
        ),
        (
            {"name": "y", "type": "string"},
            {"positive_class": True},
            'positive_class: True is a YAML boolean: quote the class, e.g. "yes"',
        ),
        (
            {"name": "y", "type": "timestamp"},
            {},
            "label: column 'y' is timestamp, expected float or int or string",
        ),
        (
            {"name": "y", "type": "string", "required": False},
            {},
            "label: column 'y' must be required",
        ),
        (
            {"name": "y", "type": "string"},
            {"label_kind": "ordinal"},
            "label_kind: Input should be 'regression', 'binary' or 'multiclass'",
        ),
    ],
)
def test_label_rules_are_checked_at_load_time(label, fields, problem):
    assert problem in problems_of(label_document(label, **fields))


# schemas/taxi.yaml's hash before label_kind, positive_class, null_tokens and
# header existed (commit 69fd168): a streaming job compares it with the batch run's.
TAXI_HASH_BEFORE_THE_NEW_FIELDS = "14effc6384824ae801c2786c4e70ddde6d391bae0e965e67d5088503fece22fc"


def test_label_fields_leave_the_hash_of_a_spec_without_them_unchanged():
    from schemas.spec import load_spec
    from tests.support import TAXI_SPEC

    assert load_spec(str(TAXI_SPEC)).spec_hash == TAXI_HASH_BEFORE_THE_NEW_FIELDS
    plain = parse_spec(label_document({"name": "y", "type": "string"}))
    declared = parse_spec(label_document({"name": "y", "type": "string"}, label_kind="multiclass"))
    assert plain.label_kind == declared.label_kind == "multiclass"
    assert plain.spec_hash != declared.spec_hash  # declared fields are content


def test_a_missing_label_is_a_dead_letter_with_a_reason():
    from transforms.records import Fields
    from transforms.validation import RowValidator

    spec = parse_spec(label_document({"name": "species", "type": "string"}))
    rows = [["a", "2025-01-01 00:00:00", "1.0", "Adelie"], ["b", "2025-01-01 00:00:00", "2.0", ""]]
    fields = Fields.from_rows(["f:1", "f:2"], ["a,...", "b,..."], rows, len(spec.columns))
    valid, dead_letters = RowValidator(spec).validate(fields)
    assert valid.column("species").to_pylist() == ["Adelie"]
    assert [(d["source"], d["reason"], d["column"]) for d in dead_letters] == [
        ("f:2", "species: required value is missing", "species")
    ]


# --- class names ---------------------------------------------------------------


def test_label_classes_in_id_order():
    from transforms.preprocessing import LabelClassesError, label_classes

    multiclass = parse_spec(label_document({"name": "y", "type": "string"}))
    assert label_classes(multiclass, ["b", "a", "c"]) == ["b", "a", "c"]
    binary = parse_spec(label_document({"name": "y", "type": "string"}, positive_class="yes"))
    assert label_classes(binary, ["yes", "no"]) == ["no", "yes"]
    assert label_classes(binary, ["no", "yes"]) == ["no", "yes"]
    with pytest.raises(LabelClassesError, match="'yes' and exactly one other class"):
        label_classes(binary, ["no", "yes", "maybe"])
    with pytest.raises(LabelClassesError, match="'yes' and exactly one other class"):
        label_classes(binary, ["no"])
    zero_one = parse_spec(label_document({"name": "y", "type": "int", "allowed": [0, 1]}))
    assert label_classes(zero_one, None) == ["0", "1"]
    assert label_classes(parse_spec(label_document({"name": "y", "type": "float"})), None) is None


# --- constant baselines --------------------------------------------------------


def test_constant_baselines_of_each_label_kind():
    from trainer.task import constant_baseline

    regression = constant_baseline("regression", np.array([1.0, 3.0]), np.array([2.0, 4.0]))
    assert regression == {"baseline_prediction": 2.0, "baseline_rmse": pytest.approx(2**0.5)}

    binary = constant_baseline("binary", np.array([1.0, 0.0, 0.0, 0.0]), np.array([1.0, 0.0]))
    assert binary["baseline_prediction"] == 0.25
    assert binary["baseline_auc"] == 0.5
    assert binary["baseline_accuracy"] == 0.5  # predicts 0 everywhere
    assert binary["baseline_log_loss"] == pytest.approx(-(np.log(0.25) + np.log(0.75)) / 2)

    train = np.array([0, 0, 0, 1, 2, 2])  # prior 1/2, 1/6, 1/3
    multiclass = constant_baseline("multiclass", train, np.array([0, 1, 2, 2]), ("a", "b", "c"))
    assert multiclass["baseline_class"] == "a"
    assert multiclass["baseline_accuracy"] == 0.25
    expected = -(np.log(1 / 2) + np.log(1 / 6) + 2 * np.log(1 / 3)) / 4
    assert multiclass["baseline_log_loss"] == pytest.approx(expected)


# --- the label in the transform graph ------------------------------------------


def transform_splits(spec, splits: dict, tmp_path):
    """AnalyzeAndTransform over {split: [(id, x, label)]}; asserts nothing, returns
    the pipeline's (key, label) per split, the dead letters and the run's classes."""
    import tensorflow_transform.beam as tft_beam

    from transforms.analyze import PASSTHROUGH_KEY, AnalyzeAndTransform
    from transforms.preprocessing import label_classes, read_label_vocabulary
    from transforms.validation import rows_schema

    def batch(rows):
        ids, xs, labels = zip(*rows, strict=True)
        columns = {"id": ids, "when": [0] * len(rows), "x": xs, spec.label: labels}
        return pa.RecordBatch.from_pydict(columns, schema=rows_schema(spec))

    def key_and_label(transformed: pa.RecordBatch):
        keys = transformed.column(PASSTHROUGH_KEY).flatten().to_pylist()
        labels = transformed.column(spec.label).flatten().to_pylist()
        return [(key.decode(), label) for key, label in zip(keys, labels, strict=True)]

    out = str(tmp_path / "out")
    collected = {}
    with test_pipeline() as p:
        inputs = {
            name: p | f"Create[{name}]" >> beam.Create([batch(rows)])
            for name, rows in splits.items()
        }
        result = inputs | AnalyzeAndTransform(spec, str(tmp_path / "tmp"))
        _ = result.transform_fn | tft_beam.WriteTransformFn(out)
        for name in splits:
            collected[name] = result.transformed_batches[name] | f"Rows[{name}]" >> beam.FlatMap(
                key_and_label
            )
        collected["dead_letter"] = result.dead_letter
        yield collected
    yield label_classes(spec, read_label_vocabulary(spec, out))


def check_transform(spec, splits, tmp_path, expected: dict, classes):
    steps = transform_splits(spec, splits, tmp_path)
    collected = next(steps)
    for name, values in expected.items():
        assert_that(collected[name], equal_to(values), label=f"Check[{name}]")
    assert next(steps) == classes


def unseen(key: str, split: str, label_class: str) -> dict:
    return {
        "source": f"{split} split, record key {key}",
        "line": "",
        "reason": f"label: class {label_class!r} was not seen in train (the label's classes "
        "are those of train)",
        "column": "label",
    }


TRAIN = [
    ("t0", 1.0, "A"),
    ("t1", 2.0, "B"),
    ("t2", 3.0, "A"),
    ("t3", 4.0, "C"),
    ("t4", 5.0, "A"),
    ("t5", 6.0, "B"),
]


@pytest.mark.slow
def test_a_multiclass_label_becomes_its_id_in_the_train_vocabulary(tmp_path):
    spec = parse_spec(
        label_document(
            {"name": "label", "type": "string"},
            split={"percentages": {"train": 80, "eval": 20}},
        )
    )
    eval_rows = [("e0", 1.5, "B"), ("e1", 2.5, "D"), ("e2", 3.5, "C")]
    # Classes by train frequency: A (3), B (2), C (1).
    check_transform(
        spec,
        {"train": TRAIN, "eval": eval_rows},
        tmp_path,
        {
            "train": [("t0", 0), ("t1", 1), ("t2", 0), ("t3", 2), ("t4", 0), ("t5", 1)],
            "eval": [("e0", 1), ("e2", 2)],
            "dead_letter": [unseen("e1", "eval", "D")],
        },
        ["A", "B", "C"],
    )


@pytest.mark.slow
def test_a_binary_string_label_is_one_for_its_positive_class(tmp_path):
    spec = parse_spec(
        label_document(
            {"name": "label", "type": "string"},
            positive_class="B",
            split={"percentages": {"train": 80, "eval": 20}},
        )
    )
    train = [(key, x, "B" if label == "B" else "N") for key, x, label in TRAIN]
    eval_rows = [("e0", 1.5, "B"), ("e1", 2.5, "maybe"), ("e2", 3.5, "N")]
    check_transform(
        spec,
        {"train": train, "eval": eval_rows},
        tmp_path,
        {
            "train": [("t0", 0.0), ("t1", 1.0), ("t2", 0.0), ("t3", 0.0), ("t4", 0.0), ("t5", 1.0)],
            "eval": [("e0", 1.0), ("e2", 0.0)],
            "dead_letter": [unseen("e1", "eval", "maybe")],
        },
        ["N", "B"],
    )


@pytest.mark.slow
def test_int_and_zero_one_labels(tmp_path):
    multiclass = parse_spec(
        label_document(
            {"name": "label", "type": "int"},
            label_kind="multiclass",
            split={"percentages": {"train": 80, "eval": 20}},
        )
    )
    train = [("t0", 1.0, 7), ("t1", 2.0, 3), ("t2", 3.0, 7)]
    check_transform(
        multiclass,
        {"train": train, "eval": [("e0", 1.0, 3), ("e1", 1.0, 5)]},
        tmp_path / "multiclass",
        {
            "train": [("t0", 0), ("t1", 1), ("t2", 0)],
            "eval": [("e0", 1)],
            "dead_letter": [unseen("e1", "eval", "5")],
        },
        ["7", "3"],
    )
    zero_one = parse_spec(
        label_document(
            {"name": "label", "type": "int", "allowed": [0, 1]},
            split={"percentages": {"train": 80, "eval": 20}},
        )
    )
    # No vocabulary: the label is its own number, and nothing is a dead letter.
    check_transform(
        zero_one,
        {"train": [("t0", 1.0, 1), ("t1", 2.0, 0)], "eval": [("e0", 1.0, 1)]},
        tmp_path / "zero_one",
        {"train": [("t0", 1.0), ("t1", 0.0)], "eval": [("e0", 1.0)], "dead_letter": []},
        ["0", "1"],
    )


def test_a_positive_class_of_0_is_part_of_the_spec_hash():
    """0 is a set value: a run whose label 0 is the positive class is not the
    run of the same spec without positive_class (the streaming job compares)."""
    label = {"name": "y", "type": "int", "allowed": [0, 1]}
    plain = parse_spec(label_document(label))
    zero = parse_spec(label_document(label, positive_class=0))
    assert plain.label_has_classes is False and zero.label_has_classes is True
    assert plain.spec_hash != zero.spec_hash
