"""benchmarks/dataflow_cost.py's arithmetic, on a made-up results document whose
expected figures were worked out by hand."""

from __future__ import annotations

import json

import pytest

from benchmarks import dataflow_cost
from benchmarks.dataflow_cost import (
    MACHINE_TYPES,
    ShuffleComponent,
    cpu_seconds_per_row,
    estimate,
    load_results,
    report,
    shuffle_components,
)
from tests.support import ROOT, TAXI_SPEC

GIB = 2**30
RESULTS = {
    "machine": {"cpus": 2, "memory_gb": 8.0},
    "sizes": {
        "100000": {"ours": {"median_cpu_seconds": 30.0, "peak_pss_bytes": GIB}},
        "1000000": {"full": {"median_cpu_seconds": 60.0, "peak_pss_bytes": 2 * GIB}},
        "10000000": {"full": {"median_cpu_seconds": 420.0, "peak_pss_bytes": 3 * GIB}},
    },
}


def test_the_cpu_per_row_is_the_marginal_cpu_of_the_two_largest_sizes():
    # (420 - 60) s over 9M more rows.
    per_row, rows, basis = cpu_seconds_per_row(RESULTS, "full")
    assert per_row == pytest.approx(4e-5)
    assert rows == 10_000_000
    assert "marginal" in basis


def test_one_size_or_a_falling_cpu_gives_the_cpu_over_the_rows():
    assert cpu_seconds_per_row(RESULTS, "ours")[0] == pytest.approx(3e-4)  # 30 s / 100k
    noisy = {"sizes": {"1000": {"ours": {"median_cpu_seconds": 9.0}},
                       "2000": {"ours": {"median_cpu_seconds": 8.0}}}}  # fmt: skip
    per_row, rows, basis = cpu_seconds_per_row(noisy, "ours")
    assert (per_row, rows) == (pytest.approx(0.004), 2000)
    assert "start-up included" in basis
    with pytest.raises(ValueError, match="no CPU time of variant 'baseline'"):
        cpu_seconds_per_row(RESULTS, "baseline")


def test_a_billion_rows_on_n1_standard_4():
    e = estimate(1_000_000_000, 4e-5, 100.0, MACHINE_TYPES["n1-standard-4"], disk_gb=25)
    assert e.vcpu_hours == pytest.approx(11.1111, rel=1e-4)  # 40,000 CPU-s
    assert e.worker_hours == pytest.approx(2.77778, rel=1e-4)  # over 4 vCPUs
    assert e.shuffle_gb == pytest.approx(186.2645, rel=1e-4)  # 2 x 100 GB / 2^30
    assert e.vcpu_usd == pytest.approx(0.622222, rel=1e-4)  # x $0.056
    assert e.memory_usd == pytest.approx(0.148208, rel=1e-4)  # x 15 GB x $0.003557
    assert e.disk_usd == pytest.approx(0.00375, rel=1e-4)  # x 25 GB x $0.000054
    assert e.shuffle_usd == pytest.approx(2.048910, rel=1e-4)  # x $0.011
    assert e.total_usd == pytest.approx(2.823090, rel=1e-4)
    assert e.wall_hours(10) == pytest.approx(0.277778, rel=1e-4)


def test_the_report_prints_the_estimate_as_a_range_and_its_sources():
    components = [ShuffleComponent("keys", 60.0, "made up", True), ShuffleComponent("x", 40.0, "")]
    text = report(
        RESULTS, "r.json", "full", MACHINE_TYPES["n1-standard-4"], "schemas/taxi.yaml", components
    )
    assert "40.0 CPU-s per 1M rows" in text
    # Shuffle from 60 bytes per row (the part that grows with the rows) to 100:
    # 111.8 to 186.3 GB, $1.23 to $2.05; totals $2.00 and $2.82.
    assert (
        "| 1,000,000,000 | 11.1 | 2.8 | 112-186 | 0.62 | 0.15 | 0.00 | 1.23-2.05 | 2.00-2.82 |"
    ) in text
    assert "| 1,000,000,000 | 16.7 min | 3.3 min | 0.8 min |" in text
    assert "list prices for us-central1" in text and dataflow_cost.PRICES_AS_OF in text
    assert "60 to 100 bytes per row" in text
    assert "1:1" in text and "SDK harness" in text and "autoscaling" in text


def test_the_shuffle_of_the_taxi_spec_by_grouping_step():
    from schemas.spec import load_spec

    calls = []

    def statistics_bytes(columns, rows, batch_rows):
        calls.append((len(columns), rows, batch_rows))
        return 2 * rows * len(columns)

    components = shuffle_components(
        load_spec(str(TAXI_SPEC)),
        key_shard_bytes=lambda batch_rows: batch_rows / 1024,
        statistics_bytes=statistics_bytes,
    )

    assert {c.name: c.bytes_per_row for c in components} == {
        # The read stage's 4,096-row batches.
        "FindDuplicateKeys: (shard, key file) pairs": 4,
        # One group (pickup_zone, 5 min), value column fare_amount, 2 aggregates:
        # (16 + 32) per cell and (8 + 2 x 8) of window values.
        "JoinAggregates[pickup_zone_300s]: period statistics and window values": 72,
        # 12 raw columns over train's 80% of a 65,536-row spill file of
        # JoinAggregates: 2 x 52,428 x 12 bytes / 65,536.
        "RawStatistics: per-bundle accumulators": pytest.approx(19.19971, rel=1e-6),
        # 24 features over a 65,536-row spill file of one split: 2 x 24 bytes.
        "TransformedStatistics: per-bundle accumulators": 48,
    }
    assert calls == [(12, 52_428, 4096), (24, 65_536, 8192)]
    # Nothing is sure to grow with the rows: the keys wait in files.
    assert [c.grows_with_rows for c in components] == [False, False, False, False]


def test_without_aggregates_the_raw_statistics_bundle_is_a_read_range():
    from schemas.spec import load_spec

    calls = []

    def statistics_bytes(columns, rows, batch_rows):
        calls.append((len(columns), rows))
        return rows

    spec = load_spec(str(ROOT / "benchmarks" / "specs" / "taxi_benchmark.yaml"))
    components = shuffle_components(
        spec, key_shard_bytes=lambda *_: 0.0, statistics_bytes=statistics_bytes
    )

    # 16 MiB / 111 bytes = 151,146 rows, of which train's 80%: 120,916.
    assert calls[0] == (10, 120_916)
    assert components[1].bytes_per_row == pytest.approx(120_916 / 151_146)
    assert [c.name for c in components] == [
        "FindDuplicateKeys: (shard, key file) pairs",
        "RawStatistics: per-bundle accumulators",
        "TransformedStatistics: per-bundle accumulators",
    ]


def test_the_measured_encodings_grow_with_what_they_hold():
    from benchmarks.dataflow_cost import measured_key_shard_bytes, measured_statistics_bytes

    # 256 (shard, path) pairs of a 70-character path, over the batch's rows.
    assert 256 * 70 / 4096 < measured_key_shard_bytes(4096) < 256 * 200 / 4096
    assert measured_key_shard_bytes(8192) == measured_key_shard_bytes(4096) / 2
    one = measured_statistics_bytes([("numeric", None)], 20_000, 4096)
    two = measured_statistics_bytes([("numeric", None), ("numeric", None)], 20_000, 4096)
    assert 10_000 * 8 < one < two
    few = measured_statistics_bytes([("categorical", 10)], 20_000, 4096)
    many = measured_statistics_bytes([("categorical", 5000)], 20_000, 4096)
    assert few < many


def test_a_one_size_document_in_the_workarounds_layout(tmp_path):
    path = tmp_path / "workarounds.json"
    path.write_text(json.dumps({"rows": 1000, "results": {"ours": {"median_cpu_seconds": 2.0}}}))
    assert load_results(str(path))["sizes"] == {"1000": {"ours": {"median_cpu_seconds": 2.0}}}
