"""End to end on a table with no event time and no key column (issue 18): NA
values, duplicated rows, two runs with one and two workers.

Checks that the derived record keys are the file and byte offset of each line,
the same on both runs, that the splits are the same, that identical rows land
in the same split, that NA in optional columns is missing and not a dead
letter, and that a declared key that is not unique is reported.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import random

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.preprocess import EXIT_OK, run
from tests.stream_scenario import read_examples

pytestmark = pytest.mark.slow

HEADER = "id,species,bill,mass,island,price"
TWO_WORKERS = ("--direct_num_workers", "2", "--direct_running_mode", "multi_processing")


def spec_document(key_column: str | None = None) -> dict:
    document = {
        "name": "shop",
        "description": "No event time; NA for missing; duplicated rows.",
        "null_tokens": ["NA"],
        "columns": [
            {"name": "id", "type": "string"},
            {"name": "species", "type": "string"},
            {"name": "bill", "type": "float", "required": False},
            {"name": "mass", "type": "int", "required": False, "default": 4000},
            {"name": "island", "type": "string", "required": False, "null_tokens": ["?"]},
            {"name": "price", "type": "float"},
        ],
        "label": "price",
        "split": {"percentages": {"train": 60, "eval": 20, "test": 20}},
        "features": [
            {"name": "bill_z", "source": "bill",
             "transform": [{"fill_missing": {"value": 0.0}}, "scale_to_z_score"]},
            {"name": "mass_z", "source": "mass", "transform": "scale_to_z_score"},
            {"name": "species_id", "source": "species", "transform": "vocabulary"},
            {"name": "island_id", "source": "island",
             "transform": [{"fill_missing": {"value": "unknown"}}, "vocabulary"]},
        ],
    }  # fmt: skip
    if key_column:
        document["key_column"] = key_column
    return document


def table_lines(count: int, seed: int) -> list[str]:
    """Data lines; ids repeat (a key column that is not unique), a third of the
    rows are copies of earlier ones, and NA or '?' stand for missing values."""
    rng = random.Random(seed)
    lines: list[str] = []
    for i in range(count):
        if lines and rng.random() < 0.33:
            lines.append(rng.choice(lines))
            continue
        bill = "NA" if rng.random() < 0.2 else f"{rng.uniform(30, 60):.1f}"
        mass = "NA" if rng.random() < 0.1 else str(rng.randint(2700, 6300))
        island = rng.choice(["Biscoe", "Dream", "Torgersen", "NA", "?"])
        species = rng.choice(["Adelie", "Gentoo", "Chinstrap"])
        lines.append(f"p{i % 150},{species},{bill},{mass},{island},{rng.uniform(5, 50):.2f}")
    return lines


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    base = tmp_path_factory.mktemp("any_table")
    inputs = base / "input"
    inputs.mkdir()
    files = {
        str(inputs / "shop-a.csv"): table_lines(400, seed=1),
        str(inputs / "shop-b.csv.gz"): table_lines(300, seed=2),
    }
    offsets = {}
    for path, lines in files.items():
        data = (HEADER + "\n" + "\n".join(lines) + "\n").encode()
        if path.endswith(".gz"):
            with gzip.open(path, "wb") as handle:
                handle.write(data)
        else:
            with open(path, "wb") as handle:
                handle.write(data)
        position = len(HEADER) + 1
        for line in lines:
            offsets[f"{path}:{position}"] = line
            position += len(line) + 1
    specs = {}
    for name, key in (("keyless", None), ("keyed", "id")):
        specs[name] = str(base / f"{name}.yaml")
        with open(specs[name], "w") as handle:
            yaml.safe_dump(spec_document(key), handle)
    return {"base": base, "pattern": str(inputs / "shop-*"), "lines": offsets, "specs": specs}


def preprocess(table, spec: str, name: str, *extra: str) -> str:
    output_dir = str(table["base"] / name)
    argv = [
        "--spec", table["specs"][spec], "--input", table["pattern"], "--output_dir", output_dir,
        "--runner", "FnApiRunner", "--write_raw_features", *extra,
    ]  # fmt: skip
    assert run(argv) == EXIT_OK
    return output_dir


def manifest_of(output_dir: str) -> dict:
    with open(os.path.join(output_dir, "manifest.json")) as handle:
        return json.load(handle)


def raw_rows(output_dir: str) -> dict[str, tuple[str, dict]]:
    """{record key: (split, row)} from the run's raw features."""
    rows = {}
    for path in glob.glob(os.path.join(output_dir, "raw_features", "*", "*.parquet")):
        split = os.path.basename(os.path.dirname(path))
        for row in pq.read_table(path).to_pylist():
            key = row["__record_key__"]
            assert key not in rows, f"key {key} twice"
            rows[key] = (split, row)
    return rows


def example_keys(output_dir: str, split: str) -> list[str]:
    return read_examples(os.path.join(output_dir, split), "__record_key__")


@pytest.fixture(scope="module")
def keyless_runs(table):
    return (
        preprocess(table, "keyless", "one_worker", "--direct_num_workers", "1"),
        preprocess(table, "keyless", "two_workers", *TWO_WORKERS),
    )


def test_a_table_without_event_time_or_key_runs_and_keeps_NA_rows(table, keyless_runs):
    manifest = manifest_of(keyless_runs[0])
    assert manifest["key_column"] == "__record_key__"
    assert manifest["record_key"] == "derived"
    assert manifest["timestamp_column"] is None
    assert "duplicate_keys" not in manifest
    # Every line is valid: NA and '?' are missing values, not bad numbers.
    assert manifest["counts"]["dead_letter"] == 0
    assert manifest["counts"]["valid"] == len(table["lines"]) == 700
    rows = raw_rows(keyless_runs[0])
    assert any(row["bill"] is None for _, row in rows.values())
    assert any(row["island"] is None for _, row in rows.values())
    assert all(row["mass"] is not None for _, row in rows.values())  # the default


def test_derived_keys_are_file_and_offset_and_the_same_on_both_runs(table, keyless_runs):
    first, second = (raw_rows(output_dir) for output_dir in keyless_runs)
    assert set(first) == set(table["lines"])
    for key, line in table["lines"].items():
        assert first[key][1]["id"] == line.split(",")[0]
    # Same keys, same rows, same splits, with one worker and with two.
    assert {k: s for k, (s, _) in first.items()} == {k: s for k, (s, _) in second.items()}
    assert {k: r for k, (_, r) in first.items()} == {k: r for k, (_, r) in second.items()}


def test_examples_carry_the_derived_key_of_their_row(keyless_runs):
    rows = raw_rows(keyless_runs[1])
    for split in ("train", "eval", "test"):
        keys = example_keys(keyless_runs[1], split)
        assert len(keys) == len(set(keys))
        assert set(keys) == {k for k, (s, _) in rows.items() if s == split}, split


def test_identical_rows_land_in_the_same_split(table, keyless_runs):
    rows = raw_rows(keyless_runs[0])
    splits_by_line = collections.defaultdict(set)
    for key, (split, _) in rows.items():
        splits_by_line[table["lines"][key]].add(split)
    copies = [line for line in splits_by_line if list(table["lines"].values()).count(line) > 1]
    assert len(copies) > 50
    assert all(len(splits) == 1 for splits in splits_by_line.values())
    assert {s for splits in splits_by_line.values() for s in splits} == {"train", "eval", "test"}


def test_a_declared_key_that_is_not_unique_is_reported(table):
    output_dir = preprocess(table, "keyed", "keyed", "--direct_num_workers", "1")
    manifest = manifest_of(output_dir)
    assert manifest["key_column"] == "id"
    assert manifest["record_key"] == "declared"
    ids = collections.Counter(line.split(",")[0] for line in table["lines"].values())
    repeated = sorted((key, n) for key, n in ids.items() if n > 1)
    assert manifest["duplicate_keys"] == {
        "count": len(repeated),
        "rows": sum(n for _, n in repeated),
        "examples": [{"key": key, "rows": n} for key, n in repeated[:5]],
    }
    with open(os.path.join(output_dir, "report.html"), encoding="utf-8") as handle:
        assert f"{len(repeated)} values are held by" in handle.read()


def test_bigquery_rows_without_a_key_get_unique_content_keys(table):
    """The batch graph on BigQuery-like row dicts: identical rows are numbered."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline

    from pipeline.preprocess import build_pipeline
    from schemas.spec import load_spec
    from transforms.bigquery_source import content_key

    spec = load_spec(table["specs"]["keyless"])
    names = HEADER.split(",")
    rows = []
    for line in table["lines"].values():
        texts = line.split(",")
        row = dict(zip(names, (None if t in ("NA", "?") else t for t in texts), strict=True))
        row["bill"] = None if row["bill"] is None else float(row["bill"])
        row["mass"] = None if row["mass"] is None else int(row["mass"])
        row["price"] = float(row["price"])
        rows.append(row)
    output_dir = str(table["base"] / "bigquery")
    options = PipelineOptions(
        ["--spec", table["specs"]["keyless"], "--output_dir", output_dir, "--write_raw_features",
         "--temp_location", str(table["base"] / "bigquery_tmp")]
    )  # fmt: skip
    with TestPipeline(runner="FnApiRunner", options=options) as p:
        build_pipeline(p, options, spec, {}, records=p | beam.Create(rows))
    keys = collections.Counter()
    splits = collections.defaultdict(set)
    for path in glob.glob(os.path.join(output_dir, "raw_features", "*", "*.parquet")):
        for row in pq.read_table(path).to_pylist():
            keys[row["__record_key__"]] += 1
            splits[row["__record_key__"].split("#")[0]].add(path.split(os.sep)[-2])
    assert sum(keys.values()) == len(rows) and max(keys.values()) == 1
    # Each distinct row is one hash with numbers 1..(its copies).
    field_texts = collections.Counter(
        content_key(["" if row[n] is None else repr(row[n]) if isinstance(row[n], float)
                     else str(row[n]) for n in names])
        for row in rows
    )  # fmt: skip
    expected = {
        f"{digest}#{n}" for digest, copies in field_texts.items() for n in range(1, copies + 1)
    }
    assert set(keys) == expected
    assert max(field_texts.values()) > 1
    assert all(len(found) == 1 for found in splits.values())
