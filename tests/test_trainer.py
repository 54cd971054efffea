"""The trainer on a small preprocessing run: learns, checkpoints, resumes, refuses bad dirs."""

from __future__ import annotations

import json

import pytest

from pipeline.preprocess import EXIT_OK, run
from pipeline.sample_data import generate_rows, write_csv
from tests.conftest import TAXI_SPEC
from trainer import task
from trainer.model import load_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("trainer")
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
    assert run([*args, "--runner", "FnApiRunner"]) == EXIT_OK
    return output_dir


def test_model_is_built_from_the_run_not_from_column_lists(data_dir):
    info = load_run(data_dir)
    assert info.label == "fare_amount" and not info.binary
    by_name = {feature.name: feature.cardinality for feature in info.features}
    assert by_name["day_hour"] == 168
    assert by_name["payment_type_id"] == 5  # 4 payment types and one OOV bucket
    assert by_name["euclidean_z"] is None
    assert "fare_amount" not in by_name and "trip_id" not in by_name


def test_training_beats_the_constant_baseline_and_resumes(data_dir, tmp_path):
    model_dir = str(tmp_path / "model")
    first = task.train_and_evaluate(data_dir, model_dir, 400, 64, steps_per_checkpoint=200)
    assert first["global_step"] == 400
    assert first["eval_rmse"] < 0.8 * first["baseline_rmse"]
    resumed = task.train_and_evaluate(data_dir, model_dir, 600, 64, steps_per_checkpoint=200)
    assert resumed["global_step"] == 600
    with open(f"{model_dir}/metrics.json") as handle:
        assert json.load(handle) == resumed
    assert (tmp_path / "model" / "logs").is_dir()


def test_a_directory_without_manifest_is_refused(tmp_path, capsys):
    code = task.main(["--data_dir", str(tmp_path), "--model_dir", str(tmp_path / "m")])
    assert code == 2
    assert "no manifest.json" in capsys.readouterr().err
