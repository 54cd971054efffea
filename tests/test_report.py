"""The run report, rendered from a small hand-made output directory.

The fast tests parse the page with the standard library; the slow one opens it
in headless Chromium (Debian package `chromium`) to check that it renders with
no console error and yields a non-trivial screenshot.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from pipeline.report import SECTIONS, main, raw_sources, reason_group, render_report
from tests.support import ROOT, TAXI_ZONE_TRIPS_1H

# Paths as the run wrote them: relative to where it ran, not to the output dir.
RUN_ROOT = "runs/taxi"
LONG_REASON = "x" * 75  # no ':' in it, so its group is its first 60 characters

DEAD_LETTERS = (
    ["pickup_datetime: 'not-a-time' is not a timestamp"] * 3
    + ["pickup_latitude: 'forty' is not a number"] * 2
    + ["expected 11 fields, got 3"] * 4
    + [LONG_REASON]
)

RAW_STATS = {
    "num_rows": 1000,
    "columns": {
        "fare": {
            "kind": "numeric",
            "count": 990,
            "missing": 10,
            "min": 2.5,
            "max": 52.5,
            "mean": 17.25,
            "std": 6.5,
            "quantiles": [2.5, 8, 10, 12, 14, 16, 18, 21, 25, 31, 52.5],
            "histogram": {
                "edges": [2.5 + 2.5 * i for i in range(21)],
                "counts": [
                    5,
                    40,
                    90,
                    130,
                    150,
                    140,
                    120,
                    100,
                    70,
                    50,
                    35,
                    25,
                    15,
                    8,
                    5,
                    3,
                    2,
                    1,
                    0,
                    1,
                ],
            },
            "sample_count": 990,
        },
        "day": {
            "kind": "categorical",
            "count": 1000,
            "missing": 0,
            "unique": 3,
            "top_values": [["Mon", 500], ["Tue", 300], ["<b>Wed</b>", 200]],
        },
        "zone_trips_1h": {
            "kind": "numeric",
            "count": 1000,
            "missing": 0,
            "min": 0.0,
            "max": 42.0,
            "mean": 7.75,
            "std": 3.0,
            "quantiles": [0, 2, 4, 5, 6, 7, 8, 10, 12, 15, 42],
            "histogram": {"edges": [2.1 * i for i in range(21)], "counts": [50] * 20},
            "sample_count": 1000,
        },
    },
}


def transformed_stats(split: str, oov_ids: int) -> dict:
    """day_id: ids 0..2 in a 3-entry vocabulary, `oov_ids` at the OOV bucket 3."""
    in_vocabulary = 100 - oov_ids
    return {
        "num_rows": 100,
        "columns": {
            "fare_scaled": {
                "kind": "numeric",
                "count": 100,
                "missing": 0,
                "min": 0.0,
                "max": 1.0 if split == "train" else 1.125,
                "mean": 0.3,
                "std": 0.1,
                "quantiles": [0, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3, 0.4, 0.4, 0.5, 1.0],
                "histogram": {"edges": [i / 20 for i in range(21)], "counts": [5] * 20},
                "sample_count": 100,
            },
            "day_id": {
                "kind": "categorical",
                "count": 100,
                "missing": 0,
                "unique": 4 if oov_ids else 3,
                "top_values": [[0, in_vocabulary - 30], [1, 20], [2, 10]]
                + ([[3, oov_ids]] if oov_ids else []),
                "value_counts": [[0, in_vocabulary - 30], [1, 20], [2, 10]]
                + ([[3, oov_ids]] if oov_ids else []),
            },
            "trips_log_z": {
                "kind": "numeric",
                "count": 100,
                "missing": 0,
                "min": -2.0,
                "max": 2.0,
                "mean": 0.0,
                "std": 1.0,
                "quantiles": [-2, -1.3, -0.8, -0.5, -0.2, 0, 0.2, 0.5, 0.8, 1.3, 2],
                "histogram": {"edges": [-2 + 0.2 * i for i in range(21)], "counts": [5] * 20},
                "sample_count": 100,
            },
        },
    }


MANIFEST = {
    "dataset": "taxi",
    "run_id": "run-20250514-0001",
    "started_at": "2025-05-14T13:05:19Z",
    "runner": "FnApiRunner",
    "inputs": [{"path": "data/taxi.csv", "size_bytes": 5523304, "has_header": True}],
    "counts": {
        "read": 1010,
        "valid": 1000,
        "dead_letter": 10,
        "header_lines": 1,
        "train": 800,
        "eval": 150,
        "test": 50,
    },
    "splits": {
        "train": {"count": 800, "percentage": 80, "shards": []},
        "eval": {"count": 150, "percentage": 15, "shards": []},
        "test": {"count": 50, "percentage": 5, "shards": []},
    },
    "dead_letter_files": [f"{RUN_ROOT}/dead_letter/dead_letter-00000-of-00001.jsonl"],
    "transform_fn_dir": f"{RUN_ROOT}/transform_fn",
    "features": {
        "fare_scaled": {"kind": "float", "cardinality": None, "sources": ["fare"]},
        "day_id": {
            "kind": "categorical",
            "cardinality": None,
            "vocabulary_size": 3,
            "sources": ["day"],
        },
        "trips_log_z": {"kind": "float", "cardinality": None, "sources": ["trips_derived"]},
    },
    "aggregates": [TAXI_ZONE_TRIPS_1H],
    "wall_seconds": 24.755,
    "rows_per_second": 2019.8,
    "statistics": {
        "raw": "stats/raw_train.json",
        "transformed": {
            "train": "stats/transformed_train.json",
            "eval": "stats/transformed_eval.json",
        },
    },
    "anomalies": [
        {
            "kind": "out_of_range",
            "stage": "transformed",
            "feature": "fare_scaled",
            "split": "eval",
            "value": 1.125,
            "threshold": 1.0,
            "message": "The feature 'fare_scaled' is scaled to [0, 1] but has <script>x</script>.",
        }
    ],
}


@pytest.fixture
def output_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    out = tmp_path / "out"
    (out / "stats").mkdir(parents=True)
    (out / "dead_letter").mkdir()
    (out / "manifest.json").write_text(json.dumps(MANIFEST))
    (out / "stats" / "raw_train.json").write_text(json.dumps(RAW_STATS))
    (out / "stats" / "transformed_train.json").write_text(json.dumps(transformed_stats("train", 0)))
    (out / "stats" / "transformed_eval.json").write_text(json.dumps(transformed_stats("eval", 8)))
    lines = [
        json.dumps({"source": "data/taxi.csv", "line": "…", "reason": r}) for r in DEAD_LETTERS
    ]
    (out / "dead_letter" / "dead_letter-00000-of-00001.jsonl").write_text("\n".join(lines) + "\n")
    return out


class _Sections(HTMLParser):
    """Text, ids and SVG count of each <section id=...>, and every element id."""

    def __init__(self):
        super().__init__()
        self.text: dict[str, str] = {}
        self.svgs: dict[str, int] = {}
        self.ids: list[str] = []
        self.scripts = 0
        self._section: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.append(attributes["id"])
        if tag == "section":
            self._section = attributes.get("id")
            self.text[self._section] = ""
            self.svgs[self._section] = 0
        elif tag == "svg" and self._section:
            self.svgs[self._section] += 1
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._section:
            self.text[self._section] += data + " "


def parse(path: str) -> tuple[str, _Sections]:
    page = pathlib.Path(path).read_text(encoding="utf-8")
    parser = _Sections()
    parser.feed(page)
    return page, parser


def squashed(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_report_has_every_section_once_and_no_script(output_dir):
    path = render_report(str(output_dir))
    assert path == str(output_dir / "report.html")
    page, sections = parse(path)
    assert [i for i in sections.ids if i in SECTIONS] == list(SECTIONS)
    assert sections.scripts == 0
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page


def test_summary_shows_inputs_counts_wall_time_and_throughput(output_dir):
    _, sections = parse(render_report(str(output_dir)))
    summary = squashed(sections.text["summary"])
    for expected in (
        "data/taxi.csv",
        "5,523,304",
        "rows read 1,010",
        "valid 1,000 99.01%",  # 1000 / 1010
        "dead letters 10 0.99%",
        "split train 800 80.00%",
        "split eval 150 15.00%",
        "24.755 s",
        "2019.8 rows/s",
        "FnApiRunner",
        "run-20250514-0001",
    ):
        assert expected in summary, expected


def rewrite_manifest(output_dir, **changes) -> None:
    manifest = json.loads((output_dir / "manifest.json").read_text())
    manifest.update(changes)
    (output_dir / "manifest.json").write_text(json.dumps(manifest))


def test_summary_names_the_record_key_and_event_time_and_flags_duplicate_keys(output_dir):
    rewrite_manifest(
        output_dir,
        key_column="trip_id",
        record_key="declared",
        timestamp_column="pickup_datetime",
        duplicate_keys={"count": 2, "rows": 5, "examples": [{"key": "<t1>", "rows": 3}]},
    )
    page, sections = parse(render_report(str(output_dir)))
    summary = squashed(sections.text["summary"])
    assert "record key trip_id event time pickup_datetime" in summary
    assert "is not unique: 2 values are held by 5 rows" in summary
    assert "&lt;t1&gt;" in page and "<t1>" not in page


def test_summary_shows_a_derived_key_and_no_event_time_and_no_duplicates(output_dir):
    rewrite_manifest(
        output_dir, key_column="__record_key__", record_key="derived", timestamp_column=None
    )
    _, sections = parse(render_report(str(output_dir)))
    summary = squashed(sections.text["summary"])
    assert "record key __record_key__ (derived: no key column declared)" in summary
    assert "event time none" in summary
    assert "Duplicate keys" not in summary


def test_dead_letters_are_grouped_by_reason_prefix(output_dir):
    # The manifest lists the file under the run's own root; the report finds it below OUT.
    _, sections = parse(render_report(str(output_dir)))
    dead = squashed(sections.text["dead-letters"])
    assert "10 dead letters" in dead
    assert "expected 11 fields, got 3 4 40.00%" in dead
    assert "pickup_datetime 3 30.00%" in dead
    assert "pickup_latitude 2 20.00%" in dead
    assert f"{LONG_REASON[:60]} 1 10.00%" in dead
    assert reason_group(LONG_REASON) == "x" * 60
    assert "not found" not in dead


def test_a_missing_dead_letter_file_is_reported_not_skipped(output_dir):
    (output_dir / "dead_letter" / "dead_letter-00000-of-00001.jsonl").unlink()
    _, sections = parse(render_report(str(output_dir)))
    assert "Dead-letter file not found" in sections.text["dead-letters"]


def test_features_pair_raw_columns_with_their_transformed_features(output_dir):
    page, sections = parse(render_report(str(output_dir)))
    features = squashed(sections.text["features"])
    # fare's panel is followed, in the same row, by fare_scaled's.
    pair = re.search(r'<div class="pair">(.*?)</div></div>', page[page.index('id="features"') :])
    assert pair is not None and "fare_scaled" in pair.group(1) and "fare" in pair.group(1)
    # 3 raw columns, 3 transformed features: one chart each.
    assert sections.svgs["features"] == 6
    assert "Features without a raw column" in features
    assert features.index("trips_log_z") > features.index("Features without a raw column")
    # Numbers of the raw column and escaped category names.
    assert "17.25" in features and "52.5" in features
    assert "&lt;b&gt;Wed&lt;/b&gt;" in page and "<b>Wed</b>" not in page


def test_raw_sources_follow_features_to_columns():
    features = {
        "passenger_count": {"sources": ["passenger_count"]},  # passthrough, same name
        "lat_bucket": {"sources": ["lat"]},
        "cell": {"sources": ["lat_bucket", "lon"]},
        "loop": {"sources": ["loop", "euclidean"]},  # a derived column, not a raw one
    }
    columns = ["passenger_count", "lat", "lon"]
    assert raw_sources("passenger_count", features, columns) == ["passenger_count"]
    assert raw_sources("cell", features, columns) == ["lon", "lat"]
    assert raw_sources("loop", features, columns) == []


def test_vocabulary_coverage_is_one_minus_the_eval_oov_rate(output_dir):
    _, sections = parse(render_report(str(output_dir)))
    vocabularies = squashed(sections.text["vocabularies"])
    # 8 of 100 eval ids are at or above the vocabulary size 3.
    assert "day_id 3 100 8 92.00%" in vocabularies


def test_aggregates_show_their_definition_and_distribution(output_dir):
    _, sections = parse(render_report(str(output_dir)))
    aggregates = squashed(sections.text["aggregates"])
    assert "zone_trips_1h" in aggregates
    assert "count per pickup_zone over 3600 s, every 300 s" in aggregates
    assert "7.75" in aggregates
    assert sections.svgs["aggregates"] == 1


def test_anomalies_are_listed_escaped_or_none_found(output_dir):
    page, sections = parse(render_report(str(output_dir)))
    anomalies = squashed(sections.text["anomalies"])
    assert "out_of_range" in anomalies and "1.125" in anomalies
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page

    manifest = json.loads((output_dir / "manifest.json").read_text())
    manifest["anomalies"] = []
    (output_dir / "manifest.json").write_text(json.dumps(manifest))
    _, sections = parse(render_report(str(output_dir)))
    assert "None found." in sections.text["anomalies"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.report", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_rebuilds_the_report(output_dir):
    result = run_cli("--output_dir", str(output_dir))
    assert result.returncode == 0, result.stderr
    assert (output_dir / "report.html").stat().st_size > 5000


def test_cli_exits_2_without_manifest_or_statistics(tmp_path, output_dir):
    result = run_cli("--output_dir", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "manifest.json" in result.stderr

    (output_dir / "stats" / "raw_train.json").unlink()
    result = run_cli("--output_dir", str(output_dir))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no statistics" in result.stderr
    assert main(["--output_dir", str(output_dir)]) == 2


# --- In a real browser -----------------------------------------------------------

CHROMIUM = shutil.which("chromium")
_CONSOLE_ERROR = re.compile(r"CONSOLE.*(error|Uncaught)|Uncaught|Refused to", re.IGNORECASE)


def chromium(*args: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if _CONSOLE_ERROR.search(line)]


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)"
)
def test_report_renders_in_headless_chromium(output_dir, tmp_path):
    url = pathlib.Path(render_report(str(output_dir))).as_uri()

    dom = chromium("--dump-dom", url, tmp_path=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert f'id="{section}"' in dom.stdout, section

    # The detector must see an error where there is one, or its silence proves nothing.
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    control = chromium(
        "--enable-logging=stderr", "--v=1", "--dump-dom", broken.as_uri(), tmp_path=tmp_path
    )
    assert console_errors(control.stderr), control.stderr[-2000:]

    logged = chromium("--enable-logging=stderr", "--v=1", "--dump-dom", url, tmp_path=tmp_path)
    assert logged.returncode == 0
    assert console_errors(logged.stderr) == []

    screenshot = tmp_path / "report.png"
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1280,2000", url, tmp_path=tmp_path)
    assert shot.returncode == 0, shot.stderr[-2000:]
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # A blank 1280x2000 page compresses to a few kB; charts and tables do not.
    assert len(png) > 30_000
