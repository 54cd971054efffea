"""Shared fixtures: the taxi spec, small spec documents, and a pinned test runner."""

from __future__ import annotations

import copy
import os
import pathlib

import pytest
import yaml

# The emulator fixtures (`pubsub_emulator`, `bigquery_emulator`), for every module.
pytest_plugins = ["tests.pubsub_emulator", "tests.bigquery_emulator"]

ROOT = pathlib.Path(__file__).resolve().parents[1]
TAXI_SPEC = ROOT / "schemas" / "taxi.yaml"

# Keep TensorFlow's C++ start-up messages out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def test_pipeline():
    """A TestPipeline on Beam's in-process batch engine, never a downloaded runner."""
    from apache_beam.testing.test_pipeline import TestPipeline

    return TestPipeline(runner="FnApiRunner")


# A small spec with live aggregates over 10 s periods, so streaming tests that run
# on the wall clock finish in seconds.
ZONES_SPEC_DOCUMENT = {
    "name": "zones",
    "columns": [
        {"name": "id", "type": "string"},
        {"name": "when", "type": "timestamp"},
        {"name": "zone", "type": "string"},
        {"name": "x", "type": "float", "min": 0.0, "max": 100.0},
        {"name": "y", "type": "float"},
    ],
    "timestamp_column": "when",
    "key_column": "id",
    "label": "y",
    "aggregates": [
        {"name": "n_60s", "key": ["zone"], "agg": "count", "window": "60s", "period": "10s"},
        {
            "name": "mean_x_30s",
            "key": ["zone"],
            "agg": "mean",
            "value": "x",
            "window": "30s",
            "period": "10s",
        },
    ],
    "features": [
        {"name": "x_z", "source": "x", "transform": "scale_to_z_score"},
        {"name": "zone_id", "source": "zone", "transform": {"vocabulary": {"num_oov_buckets": 1}}},
        {"name": "n_log", "source": "n_60s", "transform": ["log1p", "scale_to_0_1"]},
        {"name": "mean_x_z", "source": "mean_x_30s", "transform": "scale_to_z_score"},
        {"name": "hour", "source": "when", "transform": {"datetime": {"part": "hour"}}},
    ],
}


def minimal_spec(**overrides):
    """A small valid spec (id, when, x, y; label y) with top-level fields replaced."""
    from schemas.spec import parse_spec

    document = {
        "name": "tiny",
        "columns": [
            {"name": "id", "type": "string"},
            {"name": "when", "type": "timestamp"},
            {"name": "x", "type": "float"},
            {"name": "y", "type": "float"},
        ],
        "timestamp_column": "when",
        "key_column": "id",
        "label": "y",
        "features": [{"name": "x_z", "source": "x", "transform": "scale_to_z_score"}],
    }
    return parse_spec({**document, **overrides})


@pytest.fixture(scope="session")
def taxi_document() -> dict:
    return yaml.safe_load(TAXI_SPEC.read_text())


@pytest.fixture
def taxi_doc(taxi_document) -> dict:
    """A fresh, mutable copy of taxi.yaml's document."""
    return copy.deepcopy(taxi_document)


@pytest.fixture(scope="session")
def taxi_spec():
    from schemas.spec import load_spec

    return load_spec(str(TAXI_SPEC))


# pytest would collect the helper above as a test because of its name.
test_pipeline.__test__ = False
