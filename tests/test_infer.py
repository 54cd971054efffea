"""schemas.infer: type, presence, null-token, allowed-value, timestamp, key and
label detection on small inputs; determinism; a bounded read; and the inferred
specs of real and generated tables validating and running as they are."""

from __future__ import annotations

import gzip
import importlib.resources
import io
import json
import os
import subprocess
import sys

import pytest
import yaml

from schemas.infer import InferError, infer_file, infer_spec, main, profile_column, read_sample
from schemas.spec import load_spec, parse_spec


def sample_of(text: str, limit: int = 10_000):
    return read_sample(io.BytesIO(text.encode()), limit)


def infer_text(text: str, label: str) -> str:
    return infer_spec(sample_of(text), source="t.csv", label=label)


def infer_dict(text: str, label: str) -> dict:
    return yaml.safe_load(infer_text(text, label))


def column(spec: dict, name: str) -> dict:
    return next(c for c in spec["columns"] if c["name"] == name)


def features_of(spec: dict, source: str) -> list[dict]:
    return [f for f in spec["features"] if f.get("source") == source]


# --- columns ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "-2", "+3"], "int"),
        (["1", "2.5", "1e3"], "float"),
        (["a", "1"], "string"),
        (["2025-01-02 03:04:05 UTC", "2025-01-02T03:04:05Z"], "timestamp"),
        (["2025-01-02T03:04:05.123+02:00", "2025-01-03 03:04:05"], "timestamp"),
        (["2025-01-02", "2024-02-29"], "timestamp"),
        (["2025-02-30", "2025-01-01"], "string"),  # not a date: the job would refuse it
        (["inf", "1.0"], "string"),  # not finite: the job would refuse it
        ([], "string"),
    ],
)
def test_types(values, expected):
    assert profile_column("x", values).type == expected


def test_epoch_seconds_are_timestamps_only_in_a_column_named_for_time():
    epochs = ["1700000000", "1700003600"]
    assert profile_column("created_at", epochs).type == "timestamp"
    assert profile_column("pickup_time", epochs).type == "timestamp"
    assert profile_column("population", epochs).type == "int"
    assert profile_column("event_time", ["3", "4"]).type == "int"  # not plausible seconds


def test_one_stray_value_in_a_hundred_does_not_make_a_column_string():
    values = [str(i) for i in range(199)] + ["oops"]
    profile = profile_column("x", values)
    assert (profile.type, profile.bad) == ("int", ["oops"])
    assert profile_column("x", [*values[:99], "oops", "bad"]).type == "string"


def test_null_tokens_and_empty_fields_make_a_column_optional():
    profile = profile_column("x", ["1.5", "NA", " ", "\\N", "2"])
    assert (profile.type, profile.required, profile.missing) == ("float", False, 3)
    assert profile.null_tokens == ["NA", "\\N"]
    assert profile_column("x", ["1", "2"]).required


def test_inferred_columns_null_tokens_allowed_values_and_features():
    csv_text = (
        "color,size,weight,note,y\n"
        + "red,1,2.5,a1,1.0\n" * 3
        + "blue,NA,,a2,2.0\n"
        + "blue,3,NULL,a3,3.0\n"
        + "green,4,1.5,a4,4.0\n"
    )
    spec = infer_dict(csv_text, "y")
    assert spec["null_tokens"] == ["NA", "NULL"]
    assert column(spec, "color") == {
        "name": "color",
        "type": "string",
        "allowed": ["blue", "green", "red"],
    }
    assert column(spec, "size") == {"name": "size", "type": "int", "required": False}
    assert column(spec, "weight") == {"name": "weight", "type": "float", "required": False}
    # Four distinct values in six rows are not repeated enough for a domain.
    assert "allowed" not in column(spec, "note")
    # The sample's median (the lower one of an even count): 1, 1, 1, 3, 4.
    assert features_of(spec, "size") == [
        {
            "name": "size_z",
            "source": "size",
            "transform": [{"fill_missing": {"value": 1}}, "scale_to_z_score"],
        }
    ]
    assert features_of(spec, "weight")[0]["transform"] == [
        {"fill_missing": {"value": 2.5}},
        "scale_to_z_score",
    ]
    assert features_of(spec, "color")[0]["transform"] == [{"vocabulary": {"num_oov_buckets": 1}}]
    assert features_of(spec, "y") == []
    assert spec["split"] == {"percentages": {"train": 80, "eval": 10, "test": 10}}
    assert spec["label_kind"] == "regression"
    parse_spec(spec)


def test_ranges_are_comments_not_rules():
    text = infer_text("x,y\n1,5\n7,6\n", "y")
    assert "observed 1 .. 7" in text
    spec = yaml.safe_load(text)
    assert all("min" not in c and "max" not in c for c in spec["columns"])


def test_an_optional_string_feature_fills_missing_first():
    spec = infer_dict("s,y\na,1\n,2\na,3\nb,4\nb,5\n", "y")
    assert features_of(spec, "s")[0]["transform"] == [
        {"fill_missing": {"value": "__missing__"}},
        {"vocabulary": {"num_oov_buckets": 1}},
    ]


def test_no_domain_for_free_text_and_no_feature_of_a_constant_or_an_id_like_column():
    rows = "".join(
        f"{'Not enough blood for isotopes.' if i % 2 else 'Nest never observed with full clutch.'},"
        f"Anvers,n{i},{i % 3},{i}\n"
        for i in range(40)
    )
    spec = infer_dict("comment,region,individual,group,y\n" + rows, "y")
    assert "allowed" not in column(spec, "comment")
    assert features_of(spec, "comment") != []
    assert column(spec, "region")["allowed"] == ["Anvers"]
    assert features_of(spec, "region") == []  # one value: nothing to learn
    assert "key_column" not in spec and features_of(spec, "individual") == []
    assert features_of(spec, "group") != []
    parse_spec(spec)
    # One value and missing values: present or not is information.
    spec = infer_dict("region,y\nAnvers,1\n,2\nAnvers,3\n", "y")
    assert features_of(spec, "region") != []


def test_a_single_timestamp_is_the_event_time_with_calendar_parts():
    rows = "".join(f"t{i},2025-03-0{i + 1}T0{i}:00:00Z,2025-03-0{i + 1},{i}.5\n" for i in range(5))
    spec = infer_dict("trip_id,at,day,y\n" + rows, "y")
    assert column(spec, "at")["type"] == column(spec, "day")["type"] == "timestamp"
    # Two required timestamps: neither is clearly the event time.
    assert "timestamp_column" not in spec
    assert spec["key_column"] == "trip_id"
    assert [f["name"] for f in features_of(spec, "at")] == ["at_hour", "at_day_of_week", "at_month"]
    # Dates have no hour.
    assert [f["name"] for f in features_of(spec, "day")] == ["day_day_of_week", "day_month"]
    assert features_of(spec, "trip_id") == []

    spec = infer_dict(
        "trip_id,at,y\n" + "".join(r.rsplit(",", 2)[0] + ",1.0\n" for r in rows.splitlines()), "y"
    )
    assert spec["timestamp_column"] == "at"
    parse_spec(spec)


def test_a_key_must_be_unique_required_and_named_like_an_id():
    spec = infer_dict("user_id,name,y\nu1,ann,1\nu2,bob,2\nu3,cy,3\n", "y")
    assert spec["key_column"] == "user_id"
    assert features_of(spec, "user_id") == [] and features_of(spec, "name") != []
    for csv_text in (
        "user_id,y\nu1,1\nu1,2\nu3,3\n",  # not unique
        "user_id,y\nu1,1\n,2\nu3,3\n",  # not required
        "name,y\nann,1\nbob,2\n",  # not named like an id
        "a_id,b_id,y\n1,x,1\n2,y,2\n",  # two candidates: neither is clear
        "valid,y\nv1,1\nv2,2\n",  # ends in 'id' but is not an id
    ):
        spec = infer_dict(csv_text, "y")
        assert "key_column" not in spec, csv_text
        parse_spec(spec)


# --- labels -------------------------------------------------------------------------


def test_label_kinds():
    three = infer_dict("x,species\n1,a\n2,b\n3,c\n4,a\n5,b\n6,c\n", "species")
    assert three["label_kind"] == "multiclass" and "positive_class" not in three
    assert column(three, "species")["allowed"] == ["a", "b", "c"]
    assert features_of(three, "species") == []

    yes_no = infer_dict("x,answer\n1,no\n2,yes\n3,no\n4,yes\n", "answer")
    assert (yes_no["label_kind"], yes_no["positive_class"]) == ("binary", "yes")
    good_bad = infer_text("x,answer\n1,good\n2,bad\n3,good\n4,bad\n", "answer")
    assert "the second class in sorted order" in good_bad
    assert yaml.safe_load(good_bad)["positive_class"] == "good"

    zero_one = infer_dict("x,clicked\n1,0\n2,1\n3,0\n", "clicked")
    assert zero_one["label_kind"] == "binary" and column(zero_one, "clicked")["allowed"] == [0, 1]
    counts = infer_dict("x,n\n1,0\n2,5\n3,7\n", "n")
    assert counts["label_kind"] == "regression"
    for spec in (three, yes_no, zero_one, counts):
        parse_spec(spec)


def test_a_label_with_missing_values_stays_required():
    spec = infer_dict("x,y\n1,1.5\n2,NA\n3,2.5\n", "y")
    assert column(spec, "y") == {"name": "y", "type": "float"}
    parse_spec(spec)


@pytest.mark.parametrize(
    ("csv_text", "label", "message"),
    [
        ("x,y\n1,2\n", "z", "no such column"),
        ("x,t\n1,2025-01-01\n", "t", "a label must be a number or a string"),
        ("x,y\n", "y", "no rows"),
        ("x,x,y\n1,2,3\n", "y", "twice"),
        ("# from a website\nx,y\n1,2\n", "y", "looks like a comment"),
    ],
)
def test_what_cannot_become_a_spec_is_an_error(csv_text, label, message):
    with pytest.raises(InferError, match=message):
        infer_text(csv_text, label)


@pytest.mark.parametrize(
    ("header", "name"),
    [("Body Mass (g)", "Body_Mass_g"), ("1st", "c_1st"), ("Sepal.Length", "Sepal_Length")],
)
def test_a_header_that_cannot_be_a_spec_name_is_kept_as_the_column_s_header(header, name):
    text = infer_text(f"{header},y\n1,2\n3,4\n", "y")
    spec = yaml.safe_load(text)
    assert column(spec, name)["header"] == header
    assert parse_spec(spec).column(name).source_name == header


def test_the_label_may_be_named_by_its_header_text():
    text = infer_text("Body Mass (g),Species Name\n1,a\n3,b\n4,c\n", "Species Name")
    assert yaml.safe_load(text)["label"] == "Species_Name"


def test_yaml_keywords_and_odd_values_read_back_exactly():
    text = infer_text("flag,null_ish,y\nyes,NULL,1\nno,x,2\nyes,x,3\nno,\\N,4\n", "y")
    spec = yaml.safe_load(text)
    assert column(spec, "flag")["allowed"] == ["no", "yes"]  # strings, not booleans
    assert spec["null_tokens"] == ["NULL", "\\N"]
    parse_spec(spec)


def test_column_names_that_are_yaml_keywords_stay_names():
    rows = "".join(f"{i},x{i % 2},2025-01-0{i + 1} 10:00:00,{i}\n" for i in range(4))
    spec = infer_dict("on,null,yes,true\n" + rows, "true")
    assert [c["name"] for c in spec["columns"]] == ["on", "null", "yes", "true"]
    assert spec["label"] == "true" and spec["timestamp_column"] == "yes"
    assert {f["source"] for f in spec["features"]} == {"on", "null", "yes"}
    parse_spec(spec)


def test_crlf_line_ends_are_not_quoted_line_breaks():
    spec = infer_dict("x,y\r\n1,2\r\n3,4\r\n", "y")
    assert "csv" not in spec
    assert column(spec, "x") == {"name": "x", "type": "int"}


def test_big_and_tiny_float_fills_stay_floats():
    spec = infer_dict("x,y\n1e20,1\n3e20,2\n,3\n", "y")
    assert features_of(spec, "x")[0]["transform"][0] == {"fill_missing": {"value": 1e20}}
    parse_spec(spec)


def test_delimiter_and_quoted_line_breaks():
    spec = infer_dict('a;b;y\n"one\ntwo";2;1\nx;3;2\n', "y")
    assert spec["csv"] == {"delimiter": ";", "allow_quoted_newlines": True}
    parse_spec(spec)


# --- determinism and a bounded read ---------------------------------------------------


def test_the_same_file_gives_the_same_text(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        "k_id,c,v,t,y\n"
        + "".join(
            f"k{i},{'abc'[i % 3]},{i % 7}.5,2025-01-0{i % 9 + 1} 10:00:00,{i % 2}\n"
            for i in range(300)
        )
    )
    first = infer_file(str(path), "y")
    assert first == infer_file(str(path), "y")
    assert "2026" not in first and "202" not in first.splitlines()[0]  # no clock in the text


def test_reading_stops_after_the_sample(tmp_path):
    path = tmp_path / "big.csv"
    with path.open("w") as handle:
        handle.write("x,y\n")
        for i in range(200_000):
            handle.write(f"{i},{i % 3}\n")
    size = path.stat().st_size
    with path.open("rb") as handle:
        sample = read_sample(handle, 1000)
        consumed = handle.tell()
    assert len(sample.rows) == 1000
    # Read ahead is the text reader's buffer, not the file.
    assert consumed < 64 * 1024 < size / 10


def test_gzip_input(tmp_path):
    path = tmp_path / "d.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("x,y\n1,a\n2,b\n3,a\n4,b\n")
    spec = yaml.safe_load(infer_file(str(path), "y", sample_rows=3))
    assert spec["name"] == "d" and spec["positive_class"] == "b"
    assert "--sample_rows 3" in infer_file(str(path), "y", sample_rows=3)


def test_main_prints_the_spec_or_exits_2(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("x,y\n1,2\n3,4\n")
    assert main([str(path), "--label", "y"]) == 0
    parse_spec(yaml.safe_load(capsys.readouterr().out))
    assert main([str(path), "--label", "nope"]) == 2
    assert "no such column" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.csv"), "--label", "y"]) == 2


# --- real and generated tables ------------------------------------------------------------

PENGUINS = str(importlib.resources.files("palmerpenguins") / "data" / "penguins.csv")


@pytest.fixture(scope="module")
def penguins_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("infer") / "penguins.yaml"
    path.write_text(infer_file(PENGUINS, "species"))
    return path


def test_penguins_spec_validates(penguins_spec):
    spec = load_spec(str(penguins_spec))
    assert spec.null_tokens == ["NA"]
    assert spec.label_kind == "multiclass"
    assert spec.key_column is None and spec.timestamp_column is None
    optional = sorted(c.name for c in spec.columns if not c.required)
    assert optional == [
        "bill_depth_mm",
        "bill_length_mm",
        "body_mass_g",
        "flipper_length_mm",
        "sex",
    ]
    assert {c.name: c.type.value for c in spec.columns} == {
        "species": "string",
        "island": "string",
        "bill_length_mm": "float",
        "bill_depth_mm": "float",
        "flipper_length_mm": "int",
        "body_mass_g": "int",
        "sex": "string",
        "year": "int",
    }
    assert spec.column("sex").allowed == ["female", "male"]
    assert "species" not in {f.source for f in spec.features}


def run_preprocess(spec_path, data, output_dir) -> dict:
    result = subprocess.run(
        [
            sys.executable, "-m", "pipeline.preprocess", "--spec", str(spec_path),
            "--input", str(data), "--output_dir", str(output_dir), "--direct_num_workers", "1",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((output_dir / "manifest.json").read_text())


@pytest.mark.slow
def test_penguins_spec_runs_and_na_is_missing(penguins_spec, tmp_path):
    manifest = run_preprocess(penguins_spec, PENGUINS, tmp_path / "out")
    counts = manifest["counts"]
    assert counts["read"] == 344 == counts["valid"]  # 11 rows hold NA
    assert counts["dead_letter"] == 0
    assert sorted(manifest["label_classes"]) == ["Adelie", "Chinstrap", "Gentoo"]


@pytest.mark.slow
def test_taxi_sample_spec_validates_and_runs(tmp_path):
    data = tmp_path / "taxi.csv"
    subprocess.run(
        [sys.executable, "-m", "pipeline.sample_data", "--rows", "2000", "--output", str(data)],
        check=True, capture_output=True,
    )  # fmt: skip
    spec_path = tmp_path / "taxi.yaml"
    spec_path.write_text(infer_file(str(data), "fare_amount"))
    spec = load_spec(str(spec_path))
    assert (spec.timestamp_column, spec.key_column) == ("pickup_datetime", "trip_id")
    assert spec.column("passenger_count").required is False
    manifest = run_preprocess(spec_path, data, tmp_path / "out")
    counts = manifest["counts"]
    assert counts["read"] == 2000 and 0 < counts["dead_letter"] < 0.05 * counts["read"]


@pytest.mark.slow
def test_penguins_raw_headers_become_column_headers_and_the_spec_runs(tmp_path):
    """palmerpenguins' raw table names its columns like "Culmen Length (mm)" and
    has a date column: the spec names them and keeps the header texts, and the
    job finds every column by them."""
    raw = os.path.join(os.path.dirname(PENGUINS), "penguins-raw.csv")
    spec_path = tmp_path / "raw.yaml"
    spec_path.write_text(infer_file(str(raw), "Species"))
    spec = load_spec(str(spec_path))
    assert spec.column("Culmen_Length_mm").source_name == "Culmen Length (mm)"
    assert spec.timestamp_column == "Date_Egg"
    manifest = run_preprocess(spec_path, raw, tmp_path / "out")
    assert manifest["counts"]["read"] == 344 == manifest["counts"]["valid"]
    assert len(manifest["label_classes"]) == 3
