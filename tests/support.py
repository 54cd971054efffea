"""What test modules share besides fixtures: repository paths, small spec
documents, a pinned TestPipeline, and waiting on a condition with a deadline.

Fixtures live in conftest.py, which pytest loads itself; test modules import
these names from here, never from conftest (pytest does not mean conftest to be
imported as a module).
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from typing import TypeVar

ROOT = pathlib.Path(__file__).resolve().parents[1]
TAXI_SPEC = ROOT / "schemas" / "taxi.yaml"

# How the manifest describes taxi.yaml's first aggregate: what a real run must
# write, and what the report's hand-made manifest holds.
TAXI_ZONE_TRIPS_1H = {
    "name": "zone_trips_1h",
    "key": ["pickup_zone"],
    "value": None,
    "agg": "count",
    "window_seconds": 3600,
    "period_seconds": 300,
    "default": 0,
}


def test_pipeline():
    """A TestPipeline on Beam's in-process batch engine, never a downloaded runner."""
    from apache_beam.testing.test_pipeline import TestPipeline

    return TestPipeline(runner="FnApiRunner")


# pytest would collect the function above as a test in every module that imports it.
test_pipeline.__test__ = False


def spec_document(**overrides) -> dict:
    """A small valid spec document (id, when, x, y; label y) with top-level fields replaced."""
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
    return {**document, **overrides}


def minimal_spec(**overrides):
    """The parsed `spec_document(**overrides)`."""
    from schemas.spec import parse_spec

    return parse_spec(spec_document(**overrides))


# A small spec with live aggregates over 10 s periods, so streaming tests that run
# on the wall clock finish in seconds.
ZONES_SPEC_DOCUMENT = spec_document(
    name="zones",
    columns=[
        {"name": "id", "type": "string"},
        {"name": "when", "type": "timestamp"},
        {"name": "zone", "type": "string"},
        {"name": "x", "type": "float", "min": 0.0, "max": 100.0},
        {"name": "y", "type": "float"},
    ],
    aggregates=[
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
    features=[
        {"name": "x_z", "source": "x", "transform": "scale_to_z_score"},
        {"name": "zone_id", "source": "zone", "transform": {"vocabulary": {"num_oov_buckets": 1}}},
        {"name": "n_log", "source": "n_60s", "transform": ["log1p", "scale_to_0_1"]},
        {"name": "mean_x_z", "source": "mean_x_30s", "transform": "scale_to_z_score"},
        {"name": "hour", "source": "when", "transform": {"datetime": {"part": "hour"}}},
    ],
)


Value = TypeVar("Value")


class WaitTimeout(AssertionError):
    """A condition a test waited for did not come true before its deadline."""


def poll(condition: Callable[[], Value], timeout: float, interval: float) -> Value | None:
    """Calls `condition` every `interval` seconds until it returns a true value, and
    returns that value; returns None once `timeout` seconds have passed without one.

    The condition is asked once more after the deadline, so a slow last call still
    counts. An exception from `condition` ends the wait and propagates: that is how
    a condition says that waiting longer is pointless (the process died).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(interval, remaining))


def wait_for(
    condition: Callable[[], Value],
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "the condition",
) -> Value:
    """`poll`, raising WaitTimeout when the deadline passes.

    `message` says what was awaited; a callable is called only on timeout, so it can
    describe the state at that moment (a log's tail).
    """
    value = poll(condition, timeout, interval)
    if not value:
        described = message() if callable(message) else message
        raise WaitTimeout(f"gave up after {timeout:g} s waiting for {described}")
    return value
