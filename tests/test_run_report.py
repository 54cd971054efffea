"""Statistics, anomalies and the report, end to end through pipeline.preprocess.

An eval-only vocabulary mismatch must be reported as out of vocabulary (and fail
the run under --fail_on_anomalies); a second run on shifted data, against the
first as its baseline, must report drift on the shifted columns only.
"""

from __future__ import annotations

import json
import os

import pytest

from pipeline.preprocess import EXIT_FAILED, EXIT_OK, run
from pipeline.sample_data import HEADER, generate_rows, write_csv
from schemas.spec import load_spec
from tests.support import TAXI_SPEC
from transforms.split import assign_splits

pytestmark = pytest.mark.slow

SPEC = load_spec(str(TAXI_SPEC))
ROWS = 6000


def args(data: str, output_dir: str, *extra: str) -> list[str]:
    return ["--spec", str(TAXI_SPEC), "--input", data, "--output_dir", output_dir, *extra]


def manifest_of(output_dir: str) -> dict:
    with open(os.path.join(output_dir, "manifest.json")) as handle:
        return json.load(handle)


def rows_with(seed: int, change=None) -> list[list[str]]:
    rows = generate_rows(ROWS, seed=seed, messy_fraction=0)
    if change is not None:
        key, split_names = HEADER.index("trip_id"), list(SPEC.split.percentages)
        splits = assign_splits([row[key] for row in rows], SPEC.split.percentages)
        rows = [change(row, split_names[s]) for row, s in zip(rows, splits, strict=True)]
    return rows


def test_statistics_and_report_describe_the_run(tmp_path):
    data, output_dir = str(tmp_path / "trips.csv"), str(tmp_path / "out")
    write_csv(rows_with(seed=3), data)
    assert run(args(data, output_dir)) == EXIT_OK
    manifest = manifest_of(output_dir)
    with open(os.path.join(output_dir, manifest["statistics"]["raw"])) as handle:
        raw = json.load(handle)
    assert raw["num_rows"] == manifest["counts"]["train"]
    for split, path in manifest["statistics"]["transformed"].items():
        with open(os.path.join(output_dir, path)) as handle:
            assert json.load(handle)["num_rows"] == manifest["counts"][split]
    with open(os.path.join(output_dir, "report.html")) as handle:
        page = handle.read()
    for section in ("summary", "dead-letters", "features", "vocabularies", "aggregates"):
        assert f'id="{section}"' in page
    assert f"{manifest['counts']['read']:,}" in page


def test_an_eval_only_vocabulary_mismatch_is_an_oov_anomaly(tmp_path):
    zone = HEADER.index("pickup_zone")

    def rename_eval_zones(row, split):
        # 'Tue' against 'Tues': the eval rows spell every zone differently.
        return [*row[:zone], row[zone] + "s", *row[zone + 1 :]] if split == "eval" else row

    data = str(tmp_path / "trips.csv")
    write_csv(rows_with(seed=4, change=rename_eval_zones), data)
    failed_dir = str(tmp_path / "failed")
    assert run(args(data, failed_dir, "--fail_on_anomalies")) == EXIT_FAILED
    assert not os.path.exists(os.path.join(failed_dir, "manifest.json"))

    output_dir = str(tmp_path / "out")
    assert run(args(data, output_dir)) == EXIT_OK
    oov = [a for a in manifest_of(output_dir)["anomalies"] if a["kind"] == "oov_rate"]
    assert [(a["feature"], a["split"]) for a in oov] == [("pickup_zone_id", "eval")]
    assert oov[0]["value"] == pytest.approx(1.0)


def test_drift_is_reported_on_the_shifted_columns_only(tmp_path):
    fare = HEADER.index("fare_amount")

    def raise_fares(row, split):
        return [*row[:fare], f"{float(row[fare]) * 1.6:.2f}", *row[fare + 1 :]]

    first_data, second_data = str(tmp_path / "first.csv"), str(tmp_path / "second.csv")
    write_csv(rows_with(seed=5), first_data)
    write_csv(rows_with(seed=6, change=raise_fares), second_data)
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    assert run(args(first_data, first)) == EXIT_OK
    assert run(args(second_data, second, "--baseline_output_dir", first)) == EXIT_OK
    drifted = {a["feature"] for a in manifest_of(second)["anomalies"] if a["kind"] == "drift"}
    # The 3-hour mean fare per zone is an aggregate of the fares, so it moves too.
    assert drifted == {"fare_amount", "zone_mean_fare_3h"}
