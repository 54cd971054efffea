"""Classification end to end: CSV -> pipeline.preprocess -> trainer.task ->
trainer.predict -> pipeline.verify_skew, for a three-class string label and a
yes/no binary label, on generated tables with missing optional values (and,
for the binary one, no timestamp column)."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import glob
import io
import json
import math
import random

import numpy as np
import pytest
import yaml

from pipeline.preprocess import EXIT_OK, run
from trainer import task

pytestmark = pytest.mark.slow

SPECIES = {"alpha": (0.5, 0.0), "beta": (0.3, 3.0), "gamma": (0.2, 6.0)}  # share, mean of x1
SPLITS = {"train": 70, "eval": 30}
BASE = int(dt.datetime(2025, 3, 1, tzinfo=dt.UTC).timestamp())

THREE_CLASS_SPEC = {
    "name": "three_class",
    "columns": [
        {"name": "id", "type": "string"},
        {"name": "when", "type": "timestamp"},
        {"name": "x1", "type": "float"},
        {"name": "x2", "type": "float", "required": False},
        {"name": "color", "type": "string", "required": False, "default": "none"},
        {"name": "legs", "type": "int", "required": False},
        {"name": "species", "type": "string"},
    ],
    "timestamp_column": "when",
    "key_column": "id",
    "label": "species",
    "split": {"percentages": SPLITS},
    "features": [
        {"name": "x1_z", "source": "x1", "transform": "scale_to_z_score"},
        {
            "name": "x2_z",
            "source": "x2",
            "transform": [{"fill_missing": {"value": 0.0}}, "scale_to_z_score"],
        },
        {
            "name": "color_id",
            "source": "color",
            "transform": {"vocabulary": {"num_oov_buckets": 1}},
        },
        {
            "name": "legs_z",
            "source": "legs",
            "transform": [{"fill_missing": {"value": 4}}, "scale_to_z_score"],
        },
        {"name": "hour", "source": "when", "transform": {"datetime": {"part": "hour"}}},
    ],
}

YES_NO_SPEC = {
    "name": "yes_no",
    "columns": [
        {"name": "id", "type": "string"},
        {"name": "x", "type": "float"},
        {"name": "z", "type": "float", "required": False},
        {"name": "answer", "type": "string", "allowed": ["yes", "no"]},
    ],
    "key_column": "id",
    "label": "answer",
    "positive_class": "yes",
    "split": {"percentages": SPLITS},
    "features": [
        {"name": "x_z", "source": "x", "transform": "scale_to_z_score"},
        {
            "name": "z_z",
            "source": "z",
            "transform": [{"fill_missing": {"value": 0.0}}, "scale_to_z_score"],
        },
    ],
}


def eval_keys(keys: list[str]) -> set[str]:
    from transforms.split import assign_splits

    splits = assign_splits(keys, SPLITS)
    return {key for key, split in zip(keys, splits, strict=True) if split == 1}


def three_class_rows(count: int, unseen: int, seed: int = 5) -> list[dict]:
    """Rows whose species shows in x1 (and x2); `unseen` eval rows of a class
    'delta' that train never sees."""
    rng = random.Random(seed)
    names, shares = list(SPECIES), [share for share, _ in SPECIES.values()]
    keys = [f"r{i:05d}" for i in range(count)]
    delta_keys = sorted(eval_keys(keys))[:unseen]
    rows = []
    for i, key in enumerate(keys):
        species = "delta" if key in delta_keys else rng.choices(names, shares)[0]
        mean = SPECIES.get(species, (0, 9.0))[1]
        rows.append(
            {
                "id": key,
                "when": dt.datetime.fromtimestamp(BASE + 3607 * i, dt.UTC).strftime(
                    "%Y-%m-%d %H:%M:%S"
                ),
                "x1": f"{rng.gauss(mean, 1.0):.4f}",
                "x2": "" if rng.random() < 0.2 else f"{rng.gauss(mean / 2, 1.0):.4f}",
                "color": "" if rng.random() < 0.2 else rng.choice(["red", "blue"]),
                "legs": "" if rng.random() < 0.2 else str(rng.choice([2, 4, 6])),
                "species": species,
            }
        )
    return rows


def yes_no_rows(count: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        x = rng.gauss(0, 1)
        answer = "yes" if rng.random() < 1 / (1 + math.exp(-3 * x + 1)) else "no"
        z = "" if rng.random() < 0.3 else f"{rng.gauss(0, 1):.4f}"
        rows.append({"id": f"q{i:05d}", "x": f"{x:.4f}", "z": z, "answer": answer})
    return rows


def write_table(rows: list[dict], path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def preprocess(base, spec: dict, rows: list[dict]) -> str:
    (base / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    write_table(rows, base / "table.csv")
    output_dir = str(base / "out")
    args = ["--spec", str(base / "spec.yaml"), "--input", str(base / "table.csv")]
    args += ["--output_dir", output_dir, "--runner", "FnApiRunner", "--write_raw_features"]
    assert run(args) == EXIT_OK
    return output_dir


@pytest.fixture(scope="module")
def three_class(tmp_path_factory):
    base = tmp_path_factory.mktemp("three_class")
    rows = three_class_rows(1500, unseen=4)
    output_dir = preprocess(base, THREE_CLASS_SPEC, rows)
    model_dir = str(base / "model")
    metrics = task.train_and_evaluate(output_dir, model_dir, 400, 64, steps_per_checkpoint=400)
    return {"rows": rows, "output_dir": output_dir, "model_dir": model_dir, "metrics": metrics}


@pytest.fixture(scope="module")
def yes_no(tmp_path_factory):
    base = tmp_path_factory.mktemp("yes_no")
    output_dir = preprocess(base, YES_NO_SPEC, yes_no_rows(1500))
    model_dir = str(base / "model")
    metrics = task.train_and_evaluate(output_dir, model_dir, 400, 64, steps_per_checkpoint=400)
    return {"output_dir": output_dir, "model_dir": model_dir, "metrics": metrics}


def manifest_of(output_dir: str) -> dict:
    with open(f"{output_dir}/manifest.json") as handle:
        return json.load(handle)


def test_multiclass_run_lists_its_classes_and_its_unseen_eval_rows(three_class):
    manifest = manifest_of(three_class["output_dir"])
    assert manifest["label_kind"] == "multiclass"
    assert manifest["label_classes"] == ["alpha", "beta", "gamma"]  # by train frequency
    counts = manifest["counts"]
    assert manifest["unseen_label_classes"] == counts["unseen_label_classes"] == 4
    assert counts["dead_letter"] == 4
    assert counts["read"] == 1500 == counts["dead_letter"] + counts["train"] + counts["eval"]
    letters = []
    for path in manifest["dead_letter_files"]:
        with open(path) as handle:
            letters.extend(json.loads(line) for line in handle)
    delta = sorted(row["id"] for row in three_class["rows"] if row["species"] == "delta")
    assert sorted(letter["source"] for letter in letters) == [
        f"eval split, record key {key}" for key in delta
    ]
    assert {letter["reason"] for letter in letters} == {
        "species: class 'delta' was not seen in train (the label's classes are those of train)"
    }
    vocabulary = glob.glob(f"{three_class['output_dir']}/transform_fn/assets/label-classes")
    assert len(vocabulary) == 1


def test_three_classes_train_and_beat_the_majority_class(three_class):
    metrics = three_class["metrics"]
    assert metrics["baseline_class"] == "alpha"
    assert 0.4 < metrics["baseline_accuracy"] < 0.6
    assert metrics["eval_accuracy"] > metrics["baseline_accuracy"] + 0.25
    assert metrics["eval_log_loss"] < 0.7 * metrics["baseline_log_loss"]
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_log_loss"], rel=1e-3)


def test_a_yes_no_label_reports_auc_against_its_prior(yes_no):
    manifest = manifest_of(yes_no["output_dir"])
    assert manifest["label_kind"] == "binary"
    assert manifest["label_classes"] == ["no", "yes"]
    assert manifest["timestamp_column"] is None
    metrics = yes_no["metrics"]
    assert metrics["baseline_auc"] == 0.5
    assert 0.2 < metrics["baseline_prediction"] < 0.8  # the prior of "yes" in train
    assert metrics["eval_auc"] > 0.8
    assert metrics["eval_log_loss"] < metrics["baseline_log_loss"]


def predict(model_dir: str, instances: list, tmp_path) -> tuple[int, list[dict]]:
    from trainer.predict import main as predict_main

    path = tmp_path / "instances.jsonl"
    path.write_text(
        "".join((json.dumps(i) if isinstance(i, dict) else i) + "\n" for i in instances)
    )
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = predict_main(["--model_dir", model_dir, "--json_instances", str(path)])
    return code, [json.loads(line) for line in output.getvalue().splitlines()]


def model_probabilities(output_dir: str, model_dir: str, key_column: str) -> dict:
    """{key: probabilities} of the trained model on the batch job's eval examples."""
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    from trainer.model import load_run

    model = keras.models.load_model(f"{model_dir}/checkpoint.keras")
    info = load_run(output_dir)
    feature_spec = dict(tft.TFTransformOutput(output_dir).transformed_feature_spec())
    feature_spec[key_column] = tf.io.FixedLenFeature([], tf.string)
    scores = {}
    files = sorted(glob.glob(f"{output_dir}/eval/*.tfrecord.gz"))
    for records in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(512):
        parsed = tf.io.parse_example(records, feature_spec)
        keys = [k.decode() for k in parsed[key_column].numpy()]
        values = model({f.name: parsed[f.name] for f in info.features}).numpy()
        scores.update(zip(keys, values.tolist(), strict=True))
    return scores


def test_predict_takes_nulls_absent_columns_and_epoch_seconds(three_class, tmp_path):
    """Raw JSON with null and absent optional values and timestamps as epoch
    seconds (a JSON number) or with an offset: class names with probabilities,
    equal to the model's on the batch job's examples of the same rows."""
    from trainer.instances import raw_instances

    instances = [row for row in raw_instances(three_class["output_dir"], "eval", 400)]
    assert any(value is None for row in instances for value in row.values())
    for index, row in enumerate(instances):
        moment = dt.datetime.strptime(row["when"], "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=dt.UTC)
        if index % 3 == 0:
            row["when"] = int(moment.timestamp())
        elif index % 3 == 1:
            row["when"] = moment.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
        if index % 2 == 0:
            for name in [name for name, value in row.items() if value is None]:
                del row[name]
    code, results = predict(three_class["model_dir"], instances, tmp_path)
    assert code == 0
    expected = model_probabilities(three_class["output_dir"], three_class["model_dir"], "id")
    classes = ["alpha", "beta", "gamma"]
    checked = 0
    for instance, result in zip(instances, results, strict=True):
        assert list(result["probabilities"]) == classes
        probabilities = list(result["probabilities"].values())
        assert result["predicted_class"] == classes[probabilities.index(max(probabilities))]
        if instance["id"] in expected:  # not one of the unseen-class dead letters
            assert probabilities == pytest.approx(expected[instance["id"]], abs=1e-4)
            checked += 1
    assert checked >= 300


def test_predict_refuses_what_the_batch_job_refuses(three_class, tmp_path):
    good = {"id": "k", "when": "2025-03-01T10:00:00Z", "x1": 1.0, "color": None}
    code, results = predict(
        three_class["model_dir"],
        [good, {**good, "x1": None}, {**good, "when": "yesterday"}, "[1, 2]", {**good, "x1": "1"}],
        tmp_path,
    )
    assert code == 1
    assert "predicted_class" in results[0]
    assert [result.get("error") for result in results[1:]] == [
        "x1: required value is missing",
        "when: 'yesterday' is not a timestamp",
        "an instance must be a JSON object",
        "x1: expected a number, got a string",
    ]


def test_binary_predictions_name_both_classes_without_a_timestamp_column(yes_no, tmp_path):
    code, results = predict(
        yes_no["model_dir"],
        [{"id": "a", "x": 2.0, "z": None}, {"id": "b", "x": -2.0}, {"id": "c", "x": 0.1, "z": 1.0}],
        tmp_path,
    )
    assert code == 0
    for result in results:
        assert list(result["probabilities"]) == ["no", "yes"]
        assert sum(result["probabilities"].values()) == pytest.approx(1.0)
    assert results[0]["predicted_class"] == "yes" and results[1]["predicted_class"] == "no"
    assert results[0]["probabilities"]["yes"] > 0.8 > results[1]["probabilities"]["yes"]


def test_serving_signature_takes_missing_values_as_presence_masks(three_class):
    """Straight to the SavedModel: a missing value of an optional column (x2 and
    legs without default, color with one) is its mask False, whatever its value."""
    import tensorflow as tf

    signature = tf.saved_model.load(f"{three_class['model_dir']}/export").signatures[
        "serving_default"
    ]
    _, inputs = signature.structured_input_signature
    assert sorted(inputs) == sorted(
        ["id", "when", "x1", "x2", "x2__present", "color", "color__present", "legs",
         "legs__present"]
    )  # fmt: skip
    assert inputs["when"].dtype == tf.int64

    def call(x2, x2_present, color, color_present):
        return signature(
            id=tf.constant(["a", "b"]),
            when=tf.constant([BASE, BASE], tf.int64),
            x1=tf.constant([3.0, 3.0]),
            x2=tf.constant(x2),
            x2__present=tf.constant(x2_present),
            color=tf.constant(color),
            color__present=tf.constant(color_present),
            legs=tf.constant([0, 4], tf.int64),
            legs__present=tf.constant([False, True]),
        )["probabilities"].numpy()

    # Row 0: x2 missing (filled with 0.0 in the graph) and color missing (its
    # default "none"); row 1 says the same in values: x2 0.0, color "none".
    masked = call([99.0, 0.0], [False, True], ["red", "none"], [False, True])
    assert masked[0] == pytest.approx(masked[1], abs=1e-6)
    present = call([99.0, 0.0], [True, True], ["red", "none"], [True, True])
    assert present[0] != pytest.approx(masked[0], abs=1e-3)

    # The tf.Example signature: an optional column left out means the same.
    def example(**features) -> bytes:
        def feature(value):
            if isinstance(value, str):
                return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
            if isinstance(value, int):
                return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
            return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))

        named = {name: feature(value) for name, value in features.items()}
        return tf.train.Example(features=tf.train.Features(feature=named)).SerializeToString()

    loaded = tf.saved_model.load(f"{three_class['model_dir']}/export")
    examples = [example(id="a", when=BASE, x1=3.0), example(id="b", when=BASE, x1=3.0, x2=0.0,
                color="none", legs=4)]  # fmt: skip
    from_examples = loaded.signatures["serving_tf_example"](examples=tf.constant(examples))
    np.testing.assert_allclose(from_examples["probabilities"].numpy(), masked, atol=1e-6)


def _three_class_instances(three_class, count: int) -> list[dict]:
    """Eval rows as instances, some with missing optional values."""
    from trainer.instances import raw_instances

    instances = raw_instances(three_class["output_dir"], "eval", count)
    assert any(value is None for row in instances for value in row.values())
    return instances


def _served_classes(export_dir: str, instances: list[dict]) -> tuple[list, list]:
    """trainer.predict's probabilities (class-id order) and class ids."""
    from trainer.predict import predict_instances

    results = predict_instances(export_dir, [json.dumps(row) for row in instances])
    classes = ["alpha", "beta", "gamma"]
    assert all(list(result["probabilities"]) == classes for result in results)
    probabilities = [list(result["probabilities"].values()) for result in results]
    return probabilities, [classes.index(result["predicted_class"]) for result in results]


def test_saved_model_cli_gives_trainer_predicts_classes(three_class, tmp_path):
    """TF1 loading (TensorFlow Serving's way) through saved_model_cli: the same
    probabilities and class ids as trainer.predict, missing values included."""
    from tests.tf1_serving import run_saved_model_cli, signature_feed

    export_dir = f"{three_class['model_dir']}/export"
    instances = _three_class_instances(three_class, 20)
    feed = signature_feed(export_dir, instances)
    assert not all(feed["x2__present"]) and not all(feed["legs__present"])
    outputs = run_saved_model_cli(export_dir, feed, str(tmp_path / "outputs"))
    assert sorted(outputs) == ["class_ids", "classes", "predicted_class", "probabilities"]
    probabilities, class_ids = _served_classes(export_dir, instances)
    np.testing.assert_allclose(outputs["probabilities"], probabilities, rtol=0, atol=1e-5)
    assert outputs["class_ids"].tolist() == class_ids
    names = [b"alpha", b"beta", b"gamma"]
    assert outputs["predicted_class"].tolist() == [names[i] for i in class_ids]


def test_a_tf1_session_runs_both_classification_signatures(three_class):
    from tests.tf1_serving import run_in_tf1_session, serialized_examples, signature_feed

    export_dir = f"{three_class['model_dir']}/export"
    instances = _three_class_instances(three_class, 100)
    feed = signature_feed(export_dir, instances)
    results = run_in_tf1_session(
        export_dir,
        {
            "serving_default": feed,
            "serving_tf_example": {"examples": serialized_examples(feed)},
        },
    )
    probabilities, class_ids = _served_classes(export_dir, instances)
    for name, outputs in results.items():
        np.testing.assert_allclose(
            outputs["probabilities"], probabilities, rtol=0, atol=1e-5, err_msg=name
        )
        assert outputs["class_ids"].tolist() == class_ids, name


def test_skew_check_covers_rows_with_missing_values(three_class, capsys):
    import pyarrow.parquet as pq

    from pipeline.verify_skew import compare
    from pipeline.verify_skew import main as verify_skew

    output_dir = three_class["output_dir"]
    tables = [pq.read_table(p) for p in glob.glob(f"{output_dir}/raw_features/*/*.parquet")]
    assert sum(t.column("x2").null_count + t.column("legs").null_count for t in tables) > 100
    report = compare(output_dir, limit=None)
    assert report["rows"] == 1500
    assert report["unseen_label_rows"] == 4 and report["missing_keys"] == 0
    assert report["mismatches"] == 0
    assert verify_skew(["--output_dir", output_dir]) == 0
    assert "0 keys missing from the examples, 0 mismatches" in capsys.readouterr().out


# --- a real table: palmerpenguins (NA for missing, no key, no event time) -------

PENGUINS_SPEC = {
    "name": "penguins",
    "null_tokens": ["NA"],
    "columns": [
        {"name": "species", "type": "string"},
        {"name": "island", "type": "string"},
        {"name": "bill_length_mm", "type": "float", "required": False},
        {"name": "bill_depth_mm", "type": "float", "required": False},
        {"name": "flipper_length_mm", "type": "float", "required": False},
        {"name": "body_mass_g", "type": "float", "required": False},
        {"name": "sex", "type": "string", "required": False},
        {"name": "year", "type": "int"},
    ],
    "label": "species",
    "split": {"percentages": SPLITS},
    "features": [
        *(
            {
                "name": f"{name}_z",
                "source": name,
                "transform": [{"fill_missing": {"value": fill}}, "scale_to_z_score"],
            }
            for name, fill in [
                ("bill_length_mm", 44.0),
                ("bill_depth_mm", 17.0),
                ("flipper_length_mm", 200.0),
                ("body_mass_g", 4200.0),
            ]
        ),
        {"name": "island_id", "source": "island", "transform": "vocabulary"},
        {
            "name": "sex_id",
            "source": "sex",
            "transform": [{"fill_missing": {"value": "unknown"}}, "vocabulary"],
        },
    ],
}


@pytest.fixture(scope="module")
def penguins(tmp_path_factory):
    import importlib.resources

    base = tmp_path_factory.mktemp("penguins")
    table = importlib.resources.files("palmerpenguins") / "data" / "penguins.csv"
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    output_dir = preprocess(base, PENGUINS_SPEC, rows)
    model_dir = str(base / "model")
    metrics = task.train_and_evaluate(output_dir, model_dir, 600, 32, steps_per_checkpoint=600)
    return {"rows": rows, "output_dir": output_dir, "model_dir": model_dir, "metrics": metrics}


def test_penguins_na_is_missing_and_three_species_beat_the_majority_class(penguins):
    manifest = manifest_of(penguins["output_dir"])
    assert sum(1 for row in penguins["rows"] if "NA" in row.values()) == 11
    assert manifest["counts"]["read"] == 344 == manifest["counts"]["valid"]
    assert manifest["counts"]["dead_letter"] == 0
    assert manifest["record_key"] == "derived" and manifest["timestamp_column"] is None
    assert sorted(manifest["label_classes"]) == ["Adelie", "Chinstrap", "Gentoo"]
    metrics = penguins["metrics"]
    assert metrics["eval_accuracy"] > metrics["baseline_accuracy"] + 0.3
    assert metrics["eval_log_loss"] < metrics["baseline_log_loss"]


def test_penguins_predict_on_raw_json_with_nulls_and_verify_skew(penguins, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.verify_skew import main as verify_skew
    from trainer.instances import raw_instances

    output_dir = penguins["output_dir"]
    instances = raw_instances(output_dir, "eval", 200)
    assert all(
        "__record_key__" not in instance and "species" not in instance for instance in instances
    )
    assert any(value is None for instance in instances for value in instance.values())
    code, results = predict(penguins["model_dir"], instances, tmp_path)
    assert code == 0
    paths = sorted(glob.glob(f"{output_dir}/raw_features/eval/*.parquet"))
    species = pa.concat_tables([pq.read_table(p) for p in paths]).column("species").to_pylist()
    correct = 0
    for result, truth in zip(results, species, strict=True):
        assert sorted(result["probabilities"]) == ["Adelie", "Chinstrap", "Gentoo"]
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        correct += result["predicted_class"] == truth
    assert correct > 0.8 * len(results)
    capsys.readouterr()
    assert verify_skew(["--output_dir", output_dir]) == 0
    assert "0 keys missing from the examples, 0 mismatches" in capsys.readouterr().out
