"""The trainer on a small preprocessing run: learns, checkpoints, resumes, refuses bad dirs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer import task
from trainer.model import load_run

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.taxi_model"]


@pytest.fixture(scope="module")
def data_dir(taxi_run_dir):
    return taxi_run_dir


@pytest.fixture(scope="module")
def model_dir(taxi_model_dir):
    """A small model trained on the run, with its serving export in export/."""
    return taxi_model_dir


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


def test_exported_model_on_raw_json_matches_the_model_on_batch_examples(
    data_dir, model_dir, tmp_path
):
    """Serving path (raw JSON -> transform graph in the export -> model) against the
    training path (the batch pipeline's transformed examples -> model), per key."""
    import glob

    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    from trainer.instances import raw_instances
    from trainer.predict import main as predict_main

    rows = raw_instances(data_dir, "eval", 300)
    instances = tmp_path / "instances.jsonl"
    instances.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "predictions.txt"
    import contextlib

    with open(output, "w") as handle, contextlib.redirect_stdout(handle):
        assert predict_main(["--model_dir", model_dir, "--json_instances", str(instances)]) == 0
    with open(output) as handle:
        served = {
            row["trip_id"]: json.loads(line)["predictions"]
            for row, line in zip(rows, handle, strict=True)
        }

    model = keras.models.load_model(f"{model_dir}/checkpoint.keras")
    info = load_run(data_dir)
    spec = dict(tft.TFTransformOutput(data_dir).transformed_feature_spec())
    spec["trip_id"] = tf.io.FixedLenFeature([], tf.string)
    trained = {}
    files = sorted(glob.glob(f"{data_dir}/eval/*.tfrecord.gz"))
    for records in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(512):
        parsed = tf.io.parse_example(records, spec)
        keys = [k.decode() for k in parsed["trip_id"].numpy()]
        scores = model({f.name: parsed[f.name] for f in info.features}).numpy()
        trained.update(zip(keys, scores.tolist(), strict=True))
    assert len(served) == 300
    differences = [abs(served[key] - trained[key]) for key in served]
    assert max(differences) < 1e-4, max(differences)


def _served_predictions(export_dir: str, rows: list[dict]) -> list[float]:
    from trainer.predict import predict_instances

    results = predict_instances(export_dir, [json.dumps(row) for row in rows])
    return [result["predictions"] for result in results]


def test_saved_model_cli_runs_the_export_as_trainer_predict_does(data_dir, model_dir, tmp_path):
    """TensorFlow Serving's way of loading (TF1: restore the variables, run the
    signature's graph), through saved_model_cli, gives trainer.predict's values."""
    from tests.tf1_serving import run_saved_model_cli, signature_feed
    from trainer.instances import raw_instances

    export_dir = f"{model_dir}/export"
    rows = raw_instances(data_dir, "eval", 5)
    outputs = run_saved_model_cli(
        export_dir, signature_feed(export_dir, rows), str(tmp_path / "outputs")
    )
    assert sorted(outputs) == ["predictions"]
    expected = _served_predictions(export_dir, rows)
    np.testing.assert_allclose(outputs["predictions"], expected, rtol=0, atol=1e-5)


def test_a_tf1_session_runs_both_signatures_as_trainer_predict_does(data_dir, model_dir):
    from tests.tf1_serving import run_in_tf1_session, serialized_examples, signature_feed
    from trainer.instances import raw_instances

    export_dir = f"{model_dir}/export"
    rows = raw_instances(data_dir, "eval", 100)
    feed = signature_feed(export_dir, rows)
    results = run_in_tf1_session(
        export_dir,
        {
            "serving_default": feed,
            "serving_tf_example": {"examples": serialized_examples(feed)},
        },
    )
    expected = _served_predictions(export_dir, rows)
    for name, outputs in results.items():
        assert sorted(outputs) == ["predictions"], name
        np.testing.assert_allclose(outputs["predictions"], expected, rtol=0, atol=1e-5)
