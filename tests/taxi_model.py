"""A small taxi preprocessing run and a model trained on it, made once per test
session for every module that needs them (the trainer's tests, the prediction
service's): preprocessing and training are the slow part, not what is tested.

A test module gets the fixtures by loading this module as a plugin:
`pytest_plugins = ["tests.taxi_model"]`.
"""

from __future__ import annotations

import pytest

from tests.support import TAXI_SPEC

# Steps and batch size of the shared model: enough for predictions that depend
# on the inputs, few enough to train in seconds.
MODEL_STEPS = 200
MODEL_BATCH_SIZE = 64


@pytest.fixture(scope="session")
def taxi_run_dir(tmp_path_factory) -> str:
    """pipeline.preprocess's output for 4000 clean sample trips (--write_raw_features)."""
    from pipeline.preprocess import EXIT_OK, run
    from pipeline.sample_data import generate_rows, write_csv

    base = tmp_path_factory.mktemp("taxi_run")
    write_csv(generate_rows(4000, seed=21, messy_fraction=0), str(base / "trips.csv"))
    output_dir = str(base / "out")
    args = [
        "--spec",
        str(TAXI_SPEC),
        "--input",
        str(base / "trips.csv"),
        "--output_dir",
        output_dir,
    ]
    assert run([*args, "--runner", "FnApiRunner", "--write_raw_features"]) == EXIT_OK
    return output_dir


@pytest.fixture(scope="session")
def taxi_model_dir(taxi_run_dir, tmp_path_factory) -> str:
    """trainer.task's model directory (checkpoint, metrics, export/) on taxi_run_dir.
    Tests only read it."""
    from trainer import task

    model_dir = str(tmp_path_factory.mktemp("taxi_model") / "model")
    task.train_and_evaluate(
        taxi_run_dir, model_dir, MODEL_STEPS, MODEL_BATCH_SIZE, steps_per_checkpoint=MODEL_STEPS
    )
    return model_dir
