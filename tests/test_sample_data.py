"""The sample-data generator: deterministic, realistic, valid under taxi.yaml."""

from __future__ import annotations

import collections
import datetime as dt
import gzip

import numpy as np

from pipeline.sample_data import HEADER, MESSY_KINDS, generate_rows, main, write_csv
from transforms.csv_source import layout_from_first_line
from transforms.validation import LineParser


def parse_with_taxi_spec(spec, rows):
    layout = layout_from_first_line("s.csv", 0, ",".join(HEADER), spec)
    parser = LineParser(spec, {"s.csv": layout})
    return parser.parse([("s.csv", ",".join(row).encode()) for row in rows])


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    paths = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        path = tmp_path / f"{name}.csv.gz"
        assert main(["--rows", "300", "--output", str(path), "--seed", str(seed)]) == 0
        paths.append(path.read_bytes())
    assert paths[0] == paths[1]
    assert paths[0] != paths[2]
    lines = gzip.decompress(paths[0]).decode().splitlines()
    assert lines[0] == ",".join(HEADER)
    assert len(lines) == 301


def test_clean_rows_are_all_valid_under_the_taxi_spec(taxi_spec):
    parsed = parse_with_taxi_spec(taxi_spec, generate_rows(3000, seed=1, messy_fraction=0))
    assert parsed.dead_letters == []
    assert parsed.valid.num_rows == 3000


def test_messy_rows_are_all_dead_letters_under_the_taxi_spec(taxi_spec):
    clean = generate_rows(2000, seed=2, messy_fraction=0)
    mixed = generate_rows(2000, seed=2, messy_fraction=0.2)
    damaged = [m for c, m in zip(clean, mixed, strict=True) if c != m]
    assert 300 < len(damaged) < 500
    parsed = parse_with_taxi_spec(taxi_spec, damaged)
    assert parsed.valid.num_rows == 0
    assert len(parsed.dead_letters) == len(damaged)
    reasons = {record["reason"].split(":")[0] for record in parsed.dead_letters}
    assert len(reasons) >= len(MESSY_KINDS) - 2  # several kinds, named by column


def test_data_has_seasonality_clusters_and_distance_dependent_fares(taxi_spec):
    rows = generate_rows(20000, seed=5, messy_fraction=0)
    when = [dt.datetime.strptime(r[1], "%Y-%m-%d %H:%M:%S UTC") for r in rows]
    assert {w.year for w in when} == {2025}
    assert len({w.month for w in when}) == 12
    hours = collections.Counter((w.hour - 5) % 24 for w in when)  # New York winter time
    assert hours[18] > 3 * hours[4], "evening peak over the small hours"
    zones = collections.Counter(r[7] for r in rows)
    assert zones.most_common(1)[0][0] == "Midtown"
    assert zones["JFK Airport"] > 0.05 * len(rows)
    plat, plon = (np.array([float(r[i]) for r in rows]) for i in (3, 2))
    dlat, dlon = (np.array([float(r[i]) for r in rows]) for i in (5, 4))
    fare = np.array([float(r[10]) for r in rows])
    distance = np.hypot(dlat - plat, dlon - plon)
    assert np.corrcoef(distance, fare)[0, 1] > 0.7
    assert {r[8] for r in rows} == {"CARD", "CASH", "NO_CHARGE", "DISPUTE"}
    assert 0.05 < sum(r[9] == "" for r in rows) / len(rows) < 0.15


def test_write_csv_plain(tmp_path):
    path = tmp_path / "x.csv"
    write_csv([["a"] * len(HEADER)], str(path))
    assert path.read_text().splitlines() == [",".join(HEADER), ",".join(["a"] * len(HEADER))]
