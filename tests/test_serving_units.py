"""serving.service's pure parts: the request body, the row format of the
predictions, and the columns handed to the model."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from schemas.spec import Aggregate
from serving.lookup import AggregateValue
from serving.service import Refused, prediction_json, request_instances, value_columns


def test_a_request_body_gives_its_instances_or_a_400_that_says_why():
    assert request_instances(b'{"instances": [{"a": 1}, 2]}', 5) == [{"a": 1}, 2]
    for body, reason in [
        (b"{", "the request body is not JSON"),
        (b"\xff\xfe", "the request body is not JSON"),
        (b'{"instances": 3}', 'with an "instances" list'),
        (b'[{"a": 1}]', 'with an "instances" list'),
        (b'{"instances": [1, 2, 3]}', "3 instances, more than --max_instances 2"),
    ]:
        with pytest.raises(Refused) as refused:
            request_instances(body, 2)
        assert refused.value.answer.status == 400
        assert reason in refused.value.answer.document["error"], body


def test_regression_predictions_are_numbers_whatever_the_output_shape():
    assert prediction_json({"predictions": np.array([1.5, 2.25], np.float32)}, 1) == 2.25
    assert prediction_json({"predictions": np.array([[1.5], [2.25]], np.float32)}, 0) == 1.5


def test_classification_predictions_are_every_output_of_the_instance():
    outputs = {
        "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32),
        "classes": np.array([[b"no", b"yes"], [b"no", b"yes"]]),
        "predicted_class": np.array([b"yes", b"no"]),
        "class_ids": np.array([1, 0], np.int64),
        "predictions": np.array([0.75, 0.5], np.float32),
    }
    assert prediction_json(outputs, 0) == {
        "class_ids": 1,
        "classes": ["no", "yes"],
        "predicted_class": "yes",
        "predictions": 0.75,
        "probabilities": [0.25, 0.75],
    }


def test_the_model_gets_one_column_per_aggregate_in_its_arrow_type():
    count = Aggregate(name="n", key=["k"], agg="count", window="1h", period="5min")
    mean = Aggregate(name="m", key=["k"], agg="mean", value="x", window="1h", period="5min")
    values = [
        {"n": AggregateValue(3, "store", 0), "m": AggregateValue(0.0, "default", 0)},
        {"n": AggregateValue(0, "default", 0), "m": AggregateValue(2.5, "store", 0)},
    ]
    columns = value_columns(values, [count, mean])
    assert columns["n"].equals(pa.array([3, 0], pa.int64()))
    assert columns["m"].equals(pa.array([0.0, 2.5], pa.float64()))


def test_a_model_without_aggregates_needs_no_store(tmp_path):
    import json

    from serving.service import arguments_problems, parser
    from tests.support import spec_document

    export = tmp_path / "export" / "assets.extra"
    export.mkdir(parents=True)
    document = spec_document()
    assert not document.get("aggregates")
    (export / "spec.json").write_text(json.dumps(document))
    args = parser().parse_args(["--model_dir", str(tmp_path)])
    assert arguments_problems(args) == []
    # With aggregates, the store must be named.
    aggregate = {"name": "n", "key": ["id"], "agg": "count", "window": "1h", "period": "5min"}
    (export / "spec.json").write_text(json.dumps({**document, "aggregates": [aggregate]}))
    assert "--bigtable_table is required" in arguments_problems(args)
