"""The bad-input matrix: a corpus of damaged files goes through pipeline.preprocess
in one run. Nothing crashes, every record either reaches a split or is a dead
letter with the reason expected for its kind of damage, and the manifest's
counts equal what the test itself counts in the files it wrote.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import zlib

import pytest

from pipeline.preprocess import EXIT_OK, run
from pipeline.sample_data import HEADER
from tests.support import TAXI_SPEC

pytestmark = pytest.mark.slow

HEADER_LINE = ",".join(HEADER)


def row(key: str, **changes: str) -> str:
    """A valid taxi row with key `key`, with some fields replaced."""
    fields = dict(
        zip(
            HEADER,
            [key, "2025-02-03 04:05:06 UTC", "-73.98", "40.75", "-73.97", "40.76", "1",
             "Midtown", "CARD", "CMT", "9.5"],
            strict=True,
        )
    )  # fmt: skip
    fields.update(changes)
    return ",".join(fields.values())


class Corpus:
    """Writes damaged files and remembers, per file, the keys that must reach a
    split, the number of dead letters and a phrase each of their reasons holds."""

    def __init__(self, directory):
        self.directory = directory
        self.good_keys: list[str] = []
        self.expected_dead: dict[str, tuple[int, str]] = {}
        self.records = 0  # records read, headers excluded

    def write(self, name: str, data: bytes, good: list[str], dead: int, reason: str = ""):
        with open(os.path.join(self.directory, name), "wb") as handle:
            handle.write(data)
        self.good_keys.extend(good)
        if dead:
            self.expected_dead[name] = (dead, reason)
        self.records += len(good) + dead


def build_corpus(directory) -> Corpus:
    corpus = Corpus(directory)
    good = [row(f"k-{i}") for i in range(3)]
    keys = [f"k-{i}" for i in range(3)]

    def lines(*texts: str, header: str | None = HEADER_LINE, end: str = "\n") -> bytes:
        return "".join(f"{t}{end}" for t in ([header] if header else []) + list(texts)).encode()

    corpus.write(
        "truncated_last_line.csv",
        lines(*good) + b"k-x,2025-02-03 04:0",
        [*keys], 1, "expected 11 fields, got 2",
    )  # fmt: skip
    corpus.write(
        "columns.csv",
        lines(row("c-1"), "c-2,2025-02-03 04:05:06 UTC,-73.98", row("c-3") + ",extra"),
        ["c-1"], 2, "expected 11 fields",
    )  # fmt: skip
    corpus.write(
        "quoting.csv",
        lines(row("q-1", vendor_id='"C,MT"'), row("q-2", vendor_id='"C""MT"'),
              row("q-3", vendor_id='"C\nMT"')),
        ["q-1", "q-2"], 2, "unbalanced quotes",
    )  # fmt: skip
    corpus.write(
        "invalid_utf8.csv",
        lines(row("u-1")) + row("u-2", vendor_id="C\udcffMT").encode("utf-8", "surrogateescape")
        + b"\n",
        ["u-1"], 1, "invalid UTF-8",
    )  # fmt: skip
    corpus.write(
        "bom_crlf.csv", b"\xef\xbb\xbf" + lines(row("b-1"), row("b-2"), end="\r\n"),
        ["b-1", "b-2"], 0,
    )  # fmt: skip
    corpus.write("empty.csv", b"", [], 0)
    corpus.write("header_only.csv", lines(), [], 0)
    reordered = list(reversed(HEADER))
    corpus.write(
        "reordered_header.csv",
        lines(",".join(reversed(row("r-1").split(","))), header=",".join(reordered)),
        ["r-1"], 0,
    )  # fmt: skip
    corpus.write("no_header.csv", lines(row("n-1"), header=None), ["n-1"], 0)
    corpus.write(
        "numbers.csv",
        lines(row("x-1", fare_amount="nan"), row("x-2", fare_amount="inf"),
              row("x-3", fare_amount="1e400"), row("x-4", passenger_count="-1"),
              row("x-5", passenger_count="99999999999999999999999"),
              row("x-6", fare_amount="12.25")),
        ["x-6"], 5, "fare_amount|passenger_count",
    )  # fmt: skip
    corpus.write(
        "timestamps.csv",
        lines(row("t-1", pickup_datetime="2025-02-03T04:05:06+02:00"),
              row("t-2", pickup_datetime="2025-02-03T04:05:06Z"),
              row("t-3", pickup_datetime="1738555506"),
              row("t-4", pickup_datetime="02/03/2025 04:05")),
        ["t-1", "t-2", "t-3"], 1, "pickup_datetime",
    )  # fmt: skip
    # Policy (README, "Bad input"): rows are not deduplicated; a key's split
    # depends on the key alone, so its copies never straddle train and eval.
    corpus.write(
        "duplicates.csv", lines(row("d-1"), row("d-1", fare_amount="11.0")), ["d-1", "d-1"], 0
    )
    corpus.write(
        "long_line.csv", lines(row("l-1"), "y" * (10 << 20)), ["l-1"], 1, "cut to the first"
    )
    corpus.write(
        "blank_lines.csv", lines(row("e-1"), "", "   ", row("e-2")), ["e-1", "e-2"], 2, "empty"
    )
    corpus.write("nul_byte.csv", lines(row("z-1", vendor_id="C\x00MT")), ["z-1"], 0)

    # A gzip stream cut short: the rows before the cut count, the cut line is a
    # dead letter. What survives is worked out here with zlib itself.
    zipped = gzip.compress(lines(*[row(f"g-{i}") for i in range(3000)]))
    cut = zipped[: len(zipped) * 3 // 5]
    recovered = zlib.decompressobj(wbits=31).decompress(cut)
    complete = recovered.split(b"\n")[:-1]
    corpus.write(
        "cut.csv.gz", cut, [line.split(b",")[0].decode() for line in complete[1:]], 1,
        "file ends early",
    )  # fmt: skip
    corpus.write(
        "not_really.csv.gz", os.urandom(4096), [], 1, "file ends early"
    )  # fmt: skip
    return corpus


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_input")
    os.makedirs(base / "input")
    corpus = build_corpus(str(base / "input"))
    output_dir = str(base / "out")
    argv = [
        "--spec", str(TAXI_SPEC), "--input", str(base / "input" / "*"), "--output_dir",
        output_dir, "--runner", "FnApiRunner", "--max_bad_fraction", "1.0",
    ]  # fmt: skip
    assert run(argv) == EXIT_OK
    with open(os.path.join(output_dir, "manifest.json")) as handle:
        manifest = json.load(handle)
    dead_letters = []
    for path in glob.glob(os.path.join(output_dir, "dead_letter", "*.jsonl")):
        with open(path) as handle:
            dead_letters.extend(json.loads(line) for line in handle)
    return corpus, manifest, dead_letters, output_dir


def written_keys(output_dir: str) -> list[str]:
    import tensorflow as tf

    keys = []
    for path in glob.glob(os.path.join(output_dir, "*", "*.tfrecord.gz")):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            keys.append(example.features.feature["trip_id"].bytes_list.value[0].decode())
    return keys


def test_counts_equal_what_the_corpus_holds(corpus_run):
    corpus, manifest, dead_letters, _ = corpus_run
    counts = manifest["counts"]
    expected_dead = sum(n for n, _ in corpus.expected_dead.values())
    assert counts["read"] == corpus.records
    assert counts["dead_letter"] == expected_dead == len(dead_letters)
    assert counts["valid"] == len(corpus.good_keys)


def test_every_good_row_reaches_a_split_and_duplicates_are_kept(corpus_run):
    corpus, _, _, output_dir = corpus_run
    assert collections.Counter(written_keys(output_dir)) == collections.Counter(corpus.good_keys)


def test_every_dead_letter_has_the_reason_of_its_damage(corpus_run):
    import re

    corpus, _, dead_letters, _ = corpus_run
    by_file = collections.defaultdict(list)
    for record in dead_letters:
        by_file[os.path.basename(record["source"])].append(record)
    assert {name: len(records) for name, records in by_file.items()} == {
        name: n for name, (n, _) in corpus.expected_dead.items()
    }
    for name, records in by_file.items():
        phrase = corpus.expected_dead[name][1]
        for record in records:
            assert re.search(phrase, record["reason"]), (name, record["reason"])


def test_a_huge_line_is_kept_short_in_the_dead_letters(corpus_run):
    _, _, dead_letters, _ = corpus_run
    (record,) = [r for r in dead_letters if r["source"].endswith("long_line.csv")]
    assert len(record["line"]) == 10_000
    assert "10,485,760 characters" in record["reason"]
