"""Shared fixtures: the taxi spec document and the parsed taxi spec.

Names that tests import (paths, spec builders, the pinned TestPipeline, wait_for)
live in tests/support.py.
"""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from tests.support import TAXI_SPEC

# The emulator fixtures (`pubsub_emulator`, `bigquery_emulator`), for every module.
pytest_plugins = ["tests.pubsub_emulator", "tests.bigquery_emulator"]

# Keep TensorFlow's C++ start-up messages out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
