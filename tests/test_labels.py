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
        ({"name": "y", "type": "int", "allowed": [0, 1]}, {"label_kind": "regression"}, "regression"),
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


def test_label_fields_leave_the_hash_of_a_spec_without_them_unchanged():
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
