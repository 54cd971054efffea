"""End to end: generated CSV (plain and gzip) with corrupted lines -> pipeline.preprocess.

Loads the outputs with TFTransformOutput and checks counts, shapes, value ranges,
dead letters, determinism of the split, and the exit codes of failed runs.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipeline.preprocess import EXIT_FAILED, EXIT_OK, EXIT_USAGE, run
from pipeline.sample_data import HEADER, generate_rows, write_csv
from tests.support import ROOT, TAXI_SPEC, TAXI_ZONE_TRIPS_1H

pytestmark = pytest.mark.slow

CORRUPTED = [
    "0007-900000001,2025-02-03 04:05:06 UTC,-73.98,40.75",  # too few columns
    "0007-900000002,2025-02-03 04:05:06 UTC,-73.98,40.75,-73.97,40.76,1,Midtown,CARD,CMT,9.5,x",
    "0007-900000003,2025-02-03 04:05:06 UTC,-73.98,forty,-73.97,40.76,1,Midtown,CARD,CMT,9.5",
    "0007-900000004,2025-02-31 04:05:06 UTC,-73.98,40.75,-73.97,40.76,1,Midtown,CARD,CMT,9.5",
    "0007-900000005,2025-02-03 04:05:06 UTC,-73.98,40.75,-73.97,40.76,1,Midtown,CARD,CMT,-4.0",
    "0007-900000006,2025-02-03 04:05:06 UTC,0,0,0,0,1,Midtown,CARD,CMT,9.5",
    "0007-900000007,2025-02-03 04:05:06 UTC,-73.98,40.75,-73.97,40.76,1,Midtown,Bitcoin,CMT,9.5",
    ",2025-02-03 04:05:06 UTC,-73.98,40.75,-73.97,40.76,1,Midtown,CARD,CMT,9.5",
    '0007-900000009,2025-02-03 04:05:06 UTC,-73.98,40.75,-73.97,40.76,1,"Midtown,CARD,CMT,9.5',
    "0007-900000010,2025-02-03 04:05:06 UTC,-73.98,40.75,-73.97,40.76,1,Midtown,CARD,CMT,nan",
]
INVALID_UTF8 = (
    b"0007-900000011,2025-02-03 04:05:06 UTC,-73.98,40.75,-73.97,40.76,1,Caf\xe9,CARD,,9.5"
)


def write_inputs(directory) -> tuple[str, int, set[str]]:
    """Two input files (plain and gzip); returns (glob, data lines, corrupted texts)."""
    os.makedirs(directory, exist_ok=True)
    plain = os.path.join(directory, "trips-a.csv")
    write_csv(generate_rows(1500, seed=11, messy_fraction=0.01), plain)
    with open(plain, "ab") as handle:
        handle.write(("\n".join(CORRUPTED) + "\n").encode())
        handle.write(INVALID_UTF8 + b"\n")
    zipped = os.path.join(directory, "trips-b.csv.gz")
    write_csv(generate_rows(1500, seed=12, messy_fraction=0.01), zipped)
    data_lines = 3000 + len(CORRUPTED) + 1
    corrupted = {*CORRUPTED, INVALID_UTF8.decode("utf-8", errors="backslashreplace")}
    return os.path.join(directory, "trips-*"), data_lines, corrupted


def preprocess_args(pattern: str, output_dir: str, *extra: str) -> list[str]:
    return [
        "--spec",
        str(TAXI_SPEC),
        "--input",
        pattern,
        "--output_dir",
        output_dir,
        "--runner",
        "FnApiRunner",
        *extra,
    ]


# Two worker processes whatever the machine's core count (the default is one per
# core), so that the reproducibility tests always see parallel workers.
TWO_WORKERS = ("--direct_num_workers", "2", "--direct_running_mode", "multi_processing")


@pytest.fixture(scope="module")
def run_result(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    pattern, data_lines, corrupted = write_inputs(str(base / "input"))
    output_dir = str(base / "out")
    code = run(
        preprocess_args(
            pattern, output_dir, "--num_shards", "2", "--write_raw_features", *TWO_WORKERS
        )
    )
    assert code == EXIT_OK
    with open(os.path.join(output_dir, "manifest.json")) as handle:
        manifest = json.load(handle)
    return {
        "pattern": pattern,
        "output_dir": output_dir,
        "manifest": manifest,
        "data_lines": data_lines,
        "corrupted": corrupted,
        "base": base,
    }


def read_split(output_dir: str, split: str) -> list[dict]:
    import tensorflow as tf
    import tensorflow_transform as tft

    feature_spec = dict(tft.TFTransformOutput(output_dir).transformed_feature_spec())
    feature_spec["trip_id"] = tf.io.FixedLenFeature([], tf.string)
    files = sorted(glob.glob(os.path.join(output_dir, split, "*.tfrecord.gz")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [
        {k: v.numpy() for k, v in tf.io.parse_single_example(record, feature_spec).items()}
        for record in dataset
    ]


def test_counts_reconcile_with_what_was_written(run_result):
    counts = run_result["manifest"]["counts"]
    assert counts["read"] == run_result["data_lines"]
    assert counts["header_lines"] == 2
    assert (
        counts["read"] == counts["dead_letter"] + counts["train"] + counts["eval"] + counts["test"]
    )
    assert counts["valid"] == counts["train"] + counts["eval"] + counts["test"]
    # The generator damages ~1% of rows; all appended corrupted lines are bad too.
    assert len(run_result["corrupted"]) <= counts["dead_letter"] < 0.05 * counts["read"]


def test_every_record_parses_with_the_transformed_feature_spec(run_result):
    manifest = run_result["manifest"]
    seen_keys: set[bytes] = set()
    for split in ("train", "eval", "test"):
        rows = read_split(run_result["output_dir"], split)
        assert len(rows) == manifest["counts"][split]
        assert len(manifest["splits"][split]["shards"]) == 2
        keys = {row["trip_id"] for row in rows}
        assert len(keys) == len(rows)
        assert not keys & seen_keys, "a key must land in exactly one split"
        seen_keys |= keys
        for row in rows:
            assert 0 <= row["day_of_week"] < 7
            assert 0 <= row["hour_of_day"] < 24
            assert 0 <= row["pickup_latitude_bucket"] < 10
            assert 0 <= row["day_hour"] < 168
            assert 0 <= row["payment_type_id"] < 5
            assert row["fare_amount"] >= 0
    train = read_split(run_result["output_dir"], "train")
    for name in ("pickup_longitude_scaled", "dropoff_latitude_scaled"):
        values = [row[name] for row in train]
        assert min(values) == pytest.approx(0.0, abs=1e-6)
        assert max(values) == pytest.approx(1.0, abs=1e-6)


def test_every_corrupted_line_is_a_dead_letter_with_a_reason(run_result):
    manifest = run_result["manifest"]
    records = []
    for path in manifest["dead_letter_files"]:
        with open(path, encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle)
    assert len(records) == manifest["counts"]["dead_letter"]
    by_line = {record["line"]: record for record in records}
    for line in run_result["corrupted"]:
        assert line in by_line, f"missing dead letter for {line!r}"
        assert by_line[line]["reason"]
        assert by_line[line]["source"].endswith("trips-a.csv")
    assert all(record["reason"] for record in records)


def test_manifest_describes_the_run(run_result):
    manifest = run_result["manifest"]
    assert manifest["key_column"] == "trip_id"
    assert manifest["label_kind"] == "regression"
    assert manifest["timestamp_column"] == "pickup_datetime"
    assert manifest["aggregates"][0] == TAXI_ZONE_TRIPS_1H
    assert [a["name"] for a in manifest["aggregates"]] == ["zone_trips_1h", "zone_mean_fare_3h"]
    assert [os.path.basename(i["path"]) for i in manifest["inputs"]] == [
        "trips-a.csv",
        "trips-b.csv.gz",
    ]
    assert all(i["size_bytes"] > 0 and i["has_header"] for i in manifest["inputs"])
    assert len(manifest["spec_hash"]) == 64
    assert len(manifest["transform_fn_fingerprint"]) == 64
    assert manifest["package_versions"]["tensorflow-transform"] == "1.21.0"
    assert manifest["runner"] == "FnApiRunner"
    assert manifest["wall_seconds"] > 0
    # Scratch files are gone once the run is complete.
    leftovers = {"_counts", "tft_tmp"} & set(os.listdir(run_result["output_dir"]))
    assert leftovers == set()


def test_raw_features_hold_the_validated_rows(run_result):
    manifest = run_result["manifest"]
    tables = [pq.read_table(path) for path in manifest["raw_features_files"]]
    assert sum(t.num_rows for t in tables) == manifest["counts"]["valid"]
    assert tables[0].column_names == [*HEADER, "zone_trips_1h", "zone_mean_fare_3h"]
    eval_files = [p for p in manifest["raw_features_files"] if "/eval/" in p]
    eval_keys = {k for p in eval_files for k in pq.read_table(p).column("trip_id").to_pylist()}
    assert eval_keys == {
        r["trip_id"].decode() for r in read_split(run_result["output_dir"], "eval")
    }


def test_aggregates_in_raw_features_match_a_brute_force_reference(run_result):
    from tests.aggregate_reference import mismatches

    assert mismatches(run_result["output_dir"]) == {"zone_trips_1h": 0, "zone_mean_fare_3h": 0}


def test_transform_graph_loads_in_the_standard_layout(run_result):
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(run_result["output_dir"])
    assert output.vocabulary_size_by_name("payment_type_id") == 4
    assert set(output.raw_feature_spec()) == {*HEADER, "zone_trips_1h", "zone_mean_fare_3h"}
    assert output.raw_feature_spec()["vendor_id"].__class__.__name__ == "VarLenFeature"


def graph_constants(output_dir: str) -> list[tuple]:
    """Every constant of the transform graph, sorted. tf.Transform bakes analyzer
    results (quantile boundaries, means, variances, vocabulary sizes) into the
    graph as constants, so equal constants mean an equal analysis."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import tensor_util

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(output_dir, "transform_fn", "saved_model.pb"), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    constants = []
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
        for node in nodes:
            if node.op == "Const":
                array = tensor_util.MakeNdarray(node.attr["value"].tensor)
                # Strings come back as object arrays, whose bytes are pointers.
                value = repr(array.tolist()) if array.dtype == object else array.tobytes()
                constants.append((str(array.dtype), array.shape, value))
    return sorted(constants)


def files_below(directory: str) -> dict[str, bytes]:
    found = {}
    for path in glob.glob(os.path.join(directory, "**"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                found[os.path.relpath(path, directory)] = handle.read()
    return found


def example_multiset(output_dir: str, split: str) -> collections.Counter:
    """The split's examples as sorted (feature, values) tuples: protobuf does not
    promise one byte order for a map, so serialized bytes are not compared."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(output_dir, split, "*.tfrecord.gz")))
    examples = collections.Counter()
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        examples[
            tuple(
                (name, tuple(getattr(feature, feature.WhichOneof("kind")).value))
                for name, feature in sorted(features.items())
            )
        ] += 1
    return examples


def test_in_process_runs_reproduce_each_other_exactly(run_result):
    """Same input and spec, one worker process: the same splits, vocabulary
    files, analyzer results (quantile boundaries, means) and examples, and a
    manifest that shows it."""
    outputs = []
    for name in ("in_process_1", "in_process_2"):
        output_dir = str(run_result["base"] / name)
        argv = preprocess_args(run_result["pattern"], output_dir, "--direct_num_workers", "1")
        assert run(argv) == EXIT_OK
        outputs.append(output_dir)
    first, second = outputs
    for split in ("train", "eval", "test"):
        assert example_multiset(first, split) == example_multiset(second, split), split
    assets = os.path.join("transform_fn", "assets")
    vocabularies = files_below(os.path.join(first, assets))
    assert vocabularies and vocabularies == files_below(os.path.join(second, assets))
    assert graph_constants(first) == graph_constants(second)
    manifests = []
    for output_dir in outputs:
        with open(os.path.join(output_dir, "manifest.json")) as handle:
            manifests.append(json.load(handle))
    for key in ("spec_hash", "inputs", "package_versions", "counts"):
        assert manifests[0][key] == manifests[1][key] == run_result["manifest"][key], key
    assert all(entry["fingerprint"].startswith("sha256:") for entry in manifests[0]["inputs"])


def test_parallel_runs_reproduce_each_other_exactly(run_result):
    """Two default runs (several worker processes): the same vocabulary files,
    analyzer results and example multisets, bit for bit, although the workers
    finish their parts in a different order each time
    (pipeline.workarounds.reproducible_runs)."""
    first = run_result["output_dir"]
    second = str(run_result["base"] / "parallel_2")
    argv = preprocess_args(
        run_result["pattern"], second, "--num_shards", "2", "--write_raw_features", *TWO_WORKERS
    )
    assert run(argv) == EXIT_OK
    for split in ("train", "eval", "test"):
        assert example_multiset(first, split) == example_multiset(second, split), split
    assets = os.path.join("transform_fn", "assets")
    assert files_below(os.path.join(first, assets)) == files_below(os.path.join(second, assets))
    assert graph_constants(first) == graph_constants(second)


def test_parallel_and_in_process_runs_agree_up_to_float_rounding(run_result):
    """The default run (several worker processes) against an in-process run:
    the same keys in each split and the same vocabulary files; analyzer results
    agree to float32 rounding only, since the two cut the data into different
    partial results before merging them."""
    import numpy as np

    parallel, in_process = run_result["output_dir"], str(run_result["base"] / "in_process_1")
    if not os.path.exists(os.path.join(in_process, "manifest.json")):
        assert (
            run(preprocess_args(run_result["pattern"], in_process, "--direct_num_workers", "1"))
            == EXIT_OK
        )
    for split in ("train", "eval", "test"):
        keys = [{r["trip_id"] for r in read_split(d, split)} for d in (parallel, in_process)]
        assert keys[0] == keys[1], split
    assets = os.path.join("transform_fn", "assets")
    assert files_below(os.path.join(parallel, assets)) == files_below(
        os.path.join(in_process, assets)
    )
    constants = [graph_constants(d) for d in (parallel, in_process)]
    exact = [[c for c in run if not c[0].startswith("float")] for run in constants]
    assert exact[0] == exact[1]
    # Every float in the graph, sorted: a value perturbed by rounding keeps its
    # place, or swaps with a neighbour that is just as close.
    floats = [
        np.sort(np.concatenate([np.frombuffer(v, d).ravel() for d, _, v in run if d == "float32"]))
        for run in constants
    ]
    np.testing.assert_allclose(floats[0], floats[1], rtol=1e-6)


def test_a_run_on_a_beam_without_the_internals_still_succeeds(run_result, monkeypatch, caplog):
    """Every workaround's check answering "not supported", as on a Beam release
    that moved them: the run goes on with Beam's own behaviour, one warning line
    per workaround, and the same examples (to float rounding: without the
    reproducible buffers, partial results merge in arrival order)."""
    import logging

    from pipeline.compare_runs import compare
    from pipeline.workarounds.guard import Workaround

    monkeypatch.setattr(Workaround, "missing_internals", lambda self: ["a moved internal"])
    for subclass in Workaround.__subclasses__():
        monkeypatch.setattr(subclass, "missing_internals", lambda self: ["a moved internal"])
    output_dir = str(run_result["base"] / "without_workarounds")
    with caplog.at_level(logging.WARNING):
        code = run(
            preprocess_args(run_result["pattern"], output_dir, "--num_shards", "2", *TWO_WORKERS)
        )
    assert code == EXIT_OK
    off = sorted(
        r.getMessage().split()[1]
        for r in caplog.records
        if r.levelno == logging.WARNING and " is off " in r.getMessage()
    )
    assert off == ["early_workers", "parallel_worker_close", "reproducible_runs"]
    report = compare(run_result["output_dir"], output_dir)
    assert report["problems"] == []
    assert (
        sum(split["keys"] for split in report["splits"].values())
        == run_result["manifest"]["counts"]["valid"]
    )


def test_existing_complete_output_is_refused_without_overwrite(run_result, capsys):
    code = run(preprocess_args(run_result["pattern"], run_result["output_dir"]))
    assert code == EXIT_USAGE
    assert "already holds a complete run" in capsys.readouterr().err


def test_too_many_dead_letters_fail_the_run_without_a_manifest(tmp_path, capsys):
    pattern = str(tmp_path / "bad.csv")
    write_csv(generate_rows(400, seed=5, messy_fraction=0.5), pattern)
    output_dir = str(tmp_path / "out")
    code = run(preprocess_args(pattern, output_dir, "--max_bad_fraction", "0.1"))
    assert code == EXIT_FAILED
    assert "above --max_bad_fraction 10.00%" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(output_dir, "manifest.json"))


# --- usage errors: exit 2 before TensorFlow is imported ------------------------


def run_cli_in_subprocess(args: list[str]) -> tuple[int, str, bool]:
    """(exit code, stderr, whether TensorFlow was imported) of pipeline.preprocess.run."""
    code = (
        "import sys; from pipeline.preprocess import run; rc = run(sys.argv[1:]); "
        "print('tensorflow' in sys.modules); sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True
    )
    return result.returncode, result.stderr, result.stdout.strip() == "True"


@pytest.mark.parametrize(
    "edit, message",
    [
        (("scale_to_0_1", "scale_to_01"), "unknown transformation 'scale_to_01'"),
        ("source: passenger_count", "source 'passenger_cnt' is not a column"),
    ],
)
def test_bad_spec_exits_2_naming_the_problem(tmp_path, edit, message):
    text = TAXI_SPEC.read_text()
    if isinstance(edit, tuple):
        text = text.replace(*edit, 1)
    else:
        text = text.replace(edit, "source: passenger_cnt", 1)
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    data = tmp_path / "x.csv"
    write_csv(generate_rows(5, seed=1), str(data))
    args = preprocess_args(str(data), str(tmp_path / "out"))
    args[1] = str(spec)
    code, stderr, imported_tensorflow = run_cli_in_subprocess(args)
    assert code == EXIT_USAGE
    assert message in stderr
    assert not imported_tensorflow
    assert not (tmp_path / "out").exists()


def test_input_matching_nothing_exits_2(tmp_path):
    code, stderr, _ = run_cli_in_subprocess(
        preprocess_args(str(tmp_path / "none*.csv"), str(tmp_path / "out"))
    )
    assert code == EXIT_USAGE
    assert "matches no file" in stderr


def test_misspelled_flag_exits_2(tmp_path):
    data = tmp_path / "x.csv"
    write_csv(generate_rows(5, seed=1), str(data))
    code, stderr, _ = run_cli_in_subprocess(
        preprocess_args(str(data), str(tmp_path / "out"), "--max_bad_fractoin", "0.2")
    )
    assert code == EXIT_USAGE
    assert "unknown flag(s): --max_bad_fractoin" in stderr


def test_missing_required_flag_exits_2(tmp_path):
    code, stderr, _ = run_cli_in_subprocess(["--spec", str(TAXI_SPEC)])
    assert code == EXIT_USAGE
    assert "--input (or --query) is required; --output_dir is required" in stderr


# --- training/serving skew ---------------------------------------------------------


def test_serving_path_reproduces_the_written_examples(run_result, capsys):
    from pipeline.verify_skew import main as verify_skew

    assert verify_skew(["--output_dir", run_result["output_dir"]]) == 0
    assert "0 keys missing from the examples, 0 mismatches" in capsys.readouterr().out


def test_skew_check_fails_when_raw_rows_differ_from_the_examples(run_result, tmp_path):
    import shutil

    from pipeline.verify_skew import compare

    copy = str(tmp_path / "out")
    shutil.copytree(run_result["output_dir"], copy)
    (path, *_) = sorted(glob.glob(f"{copy}/raw_features/eval/*.parquet"))
    table = pq.read_table(path)
    moved = [value + 0.01 for value in table.column("pickup_longitude").to_pylist()]
    index = table.column_names.index("pickup_longitude")
    pq.write_table(table.set_column(index, "pickup_longitude", [moved]), path)
    report = compare(copy, limit=None)
    assert report["features"]["pickup_longitude_scaled"]["mismatches"] == table.num_rows
    assert report["features"]["payment_type_id"]["mismatches"] == 0
