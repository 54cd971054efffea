"""Tables unlike the taxi one (issue 18): null tokens in every source, derived
record keys (CSV offsets, BigQuery content hashes, Pub/Sub message ids),
whole-record splits, duplicate declared keys, and streaming by publish time."""

from __future__ import annotations

import datetime as dt
import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from schemas.spec import RECORD_KEY, parse_spec
from tests.support import test_pipeline
from transforms.bigquery_source import BigQueryRows, content_key
from transforms.csv_source import CsvLines, layout_from_first_line
from transforms.messages import EVENT_TIME, PubsubMessages, event_time_column
from transforms.record_keys import (
    DuplicateKeysFn,
    FindDuplicateKeys,
    NumberIdenticalRecords,
    keys_by_shard,
    repeated_keys,
)
from transforms.split import SplitByKey, record_texts
from transforms.validation import InputValidator, arrow_schema

SOURCE = "/data/penguins.csv"
HEADER = "species,bill,mass,island,note,price"


def keyless_document(**extra) -> dict:
    """Neither event time nor key; NA, NULL and \\N mean missing everywhere,
    '-' in `bill` too."""
    return {
        "name": "penguins",
        "columns": [
            {"name": "species", "type": "string"},
            {"name": "bill", "type": "float", "required": False, "null_tokens": ["-"]},
            {"name": "mass", "type": "int", "required": False, "default": 4000},
            {"name": "island", "type": "string", "required": False},
            {"name": "note", "type": "string", "required": False},
            {"name": "price", "type": "float"},
        ],
        "null_tokens": ["NA", "NULL", "\\N"],
        "label": "price",
        "features": [
            {"name": "island_id", "source": "island", "transform": ["fill_missing", "vocabulary"]}
        ],
        **extra,
    }


def _fill(document: dict) -> dict:
    document["features"][0]["transform"] = [{"fill_missing": {"value": "?"}}, "vocabulary"]
    return document


SPEC = parse_spec(_fill(keyless_document()))
LAYOUT = layout_from_first_line(SOURCE, 0, HEADER, SPEC)


def csv_records(*lines: str, start: int = 0) -> list[tuple[str, bytes, int]]:
    """(path, line, offset) as ReadCsvLineBatches gives them."""
    records, offset = [], start
    for line in lines:
        records.append((SOURCE, line.encode(), offset))
        offset += len(line.encode()) + 1
    return records


def validate_csv(records, spec=SPEC, layout=LAYOUT):
    return InputValidator(spec, CsvLines(spec, {layout.path: layout})).parse(records)


# --- null tokens -------------------------------------------------------------


PLAIN_LINES = (
    "Adelie,39.1,3750,Torgersen,ok,1.5",
    "Adelie,NA,NA,NA,NA,2.5",
    "Gentoo,-,\\N,NULL, NA ,3.5",
)


@pytest.mark.parametrize("quoted", [False, True], ids=["vectorised", "line_by_line"])
def test_null_tokens_mean_missing_like_an_empty_field(quoted):
    lines = list(PLAIN_LINES)
    if quoted:  # a quote sends the batch's lines through the per-line path
        lines.append('"Chinstrap",,,,,4.5')
    parsed = validate_csv(csv_records(*lines))
    assert parsed.dead_letters == []
    rows = {(r["species"], r["bill"], r["mass"], r["island"], r["note"]) for r in
            parsed.valid.to_pylist()}  # fmt: skip
    expected = {
        ("Adelie", 39.1, 3750, "Torgersen", "ok"),
        # Optional with a default takes it; optional without one stays missing.
        ("Adelie", None, 4000, None, None),
        ("Gentoo", None, 4000, None, None),
    }
    if quoted:
        expected.add(("Chinstrap", None, 4000, None, None))
    assert rows == expected


def test_a_column_token_is_only_missing_in_its_column():
    # '-' is bill's token, not the note's: the note keeps it.
    (row,) = validate_csv(csv_records("Adelie,-,3750,Dream,-,1")).valid.to_pylist()
    assert (row["bill"], row["note"]) == (None, "-")


def test_a_token_in_a_required_column_makes_a_missing_dead_letter():
    parsed = validate_csv(csv_records("NA,39.1,3750,Dream,x,1"))
    (record,) = parsed.dead_letters
    assert (record["column"], record["reason"]) == ("species", "species: required value is missing")


def test_without_declared_tokens_NA_is_a_bad_number(taxi_spec):
    spec = parse_spec(_fill(keyless_document(null_tokens=[])))
    parsed = validate_csv(csv_records("Adelie,39.1,NA,Dream,x,1"), spec=spec)
    (record,) = parsed.dead_letters
    assert record["reason"] == "mass: 'NA' is not an integer"


def test_bigquery_null_and_tokens_mean_missing():
    rows = [
        {"species": "Adelie", "bill": None, "mass": None, "island": None, "note": "NA", "price": 1},
        {
            "species": "Gentoo",
            "bill": 40.5,
            "mass": 5000,
            "island": "Biscoe",
            "note": "x",
            "price": 2,
        },
    ]
    parsed = InputValidator(SPEC, BigQueryRows(SPEC, "bq://p.d.t")).parse(rows)
    assert parsed.dead_letters == []
    valid = parsed.valid.to_pylist()
    assert [(r["bill"], r["mass"], r["island"], r["note"]) for r in valid] == [
        (None, 4000, None, None),
        (40.5, 5000, "Biscoe", "x"),
    ]


def test_json_null_absent_fields_and_tokens_mean_missing_in_messages():
    published = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    bodies = [
        {"species": "Adelie", "bill": None, "mass": "NA", "island": None, "price": 1.0},
        {"species": "Gentoo", "bill": "-", "note": "\\N", "price": 2.0},
    ]
    messages = [
        PubsubMessage(json.dumps(b).encode(), {}, message_id=f"m{i}", publish_time=published)
        for i, b in enumerate(bodies)
    ]
    parsed = InputValidator(SPEC, PubsubMessages(SPEC)).parse(messages)
    assert parsed.dead_letters == []
    assert [(r["bill"], r["mass"], r["island"], r["note"]) for r in parsed.valid.to_pylist()] == [
        (None, 4000, None, None),
        (None, 4000, None, None),
    ]


# --- derived record keys -------------------------------------------------------


def test_csv_rows_are_keyed_by_file_and_byte_offset():
    lines = (HEADER, *PLAIN_LINES)
    parsed = validate_csv(csv_records(*lines))
    assert parsed.valid.schema.names == [*SPEC.column_names, RECORD_KEY]
    keys = sorted(parsed.valid.column(RECORD_KEY).to_pylist())
    offsets = [len(HEADER) + 1]
    offsets += [offsets[-1] + len(PLAIN_LINES[0]) + 1, 0]
    offsets[2] = offsets[1] + len(PLAIN_LINES[1]) + 1
    assert keys == sorted(f"{SOURCE}:{offset}" for offset in offsets)


def test_a_csv_key_does_not_depend_on_the_batch_or_the_parsing_path():
    records = csv_records(*PLAIN_LINES, '"Chinstrap",1.0,,,,2')
    whole = validate_csv(records).valid
    by_key = dict(zip(whole.column(RECORD_KEY).to_pylist(), whole.to_pylist(), strict=True))
    assert len(by_key) == 4
    for record in records:  # one line at a time: other batches, the line path for the quote
        (row,) = validate_csv([record]).valid.to_pylist()
        assert by_key[row[RECORD_KEY]] == row


def test_csv_lines_without_offsets_are_refused_when_a_key_must_be_derived():
    with pytest.raises(ValueError, match="byte offsets"):
        validate_csv([(SOURCE, PLAIN_LINES[0].encode())])


def test_pubsub_rows_are_keyed_by_message_id_and_timed_by_publish_time():
    published = dt.datetime(2026, 1, 1, 0, 0, 7, tzinfo=dt.UTC)
    body = json.dumps({"species": "Adelie", "price": 1.0}).encode()
    messages = [
        PubsubMessage(body, {}, message_id="m1", publish_time=published),
        PubsubMessage(body, {}, message_id=None, publish_time=published),
        PubsubMessage(body, {}, message_id="m3", publish_time=None),
    ]
    parsed = InputValidator(SPEC, PubsubMessages(SPEC)).parse(messages)
    (row,) = parsed.valid.to_pylist()
    assert (row[RECORD_KEY], row[EVENT_TIME]) == ("m1", int(published.timestamp()))
    assert [d["reason"] for d in parsed.dead_letters] == [
        "message has no message_id, the record key of a spec without key_column",
        "message has no publish time, the event time of a spec without timestamp_column",
    ]
    assert event_time_column(SPEC) == EVENT_TIME


def test_bigquery_content_keys_are_equal_only_for_equal_rows():
    assert content_key(["a", "1"]) == content_key(["a", "1"])
    assert content_key(["a", "1"]) != content_key(["a1", ""])
    assert len(content_key(["x"])) == 32


def keyed_batch(keys: list[str], values: list[int]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"v": pa.array(values, pa.int64()), RECORD_KEY: pa.array(keys, pa.string())}
    )


def test_identical_bigquery_rows_are_numbered_into_unique_stable_keys(tmp_path):
    batches = [
        keyed_batch(["h1", "h2", "h3"], [1, 2, 3]),
        keyed_batch(["h2", "h4", "h2"], [2, 4, 2]),
        keyed_batch(["h3"], [3]),
    ]
    with test_pipeline() as p:
        keys = (
            p
            | beam.Create(batches)
            | NumberIdenticalRecords(RECORD_KEY, str(tmp_path))
            | beam.FlatMap(lambda batch: batch.to_pylist())
            | beam.Map(lambda row: (row[RECORD_KEY], row["v"]))
        )
        assert_that(
            keys,
            equal_to(
                [("h1#1", 1), ("h2#1", 2), ("h2#2", 2), ("h2#3", 2), ("h3#1", 3), ("h3#2", 3),
                 ("h4#1", 4)]
            ),
        )  # fmt: skip


def species_in(batch: pa.RecordBatch, split: str) -> list[tuple[str, str]]:
    return [(row["species"], split) for row in batch.to_pylist()]


def test_without_a_split_key_identical_records_share_a_split():
    spec = parse_spec(_fill(keyless_document(split={"percentages": {"train": 50, "eval": 50}})))
    assert spec.split_key is None
    rows = [
        {"species": f"s{i % 40}", "bill": float(i % 40), "mass": 4000, "island": None, "price": 1.0}
        for i in range(400)
    ]
    for index, row in enumerate(rows):
        row[RECORD_KEY] = f"{SOURCE}:{index}"  # unique, and left out of the split
    schema = arrow_schema(spec)
    batches = [
        pa.RecordBatch.from_pylist(rows[i : i + 33], schema=schema) for i in range(0, 400, 33)
    ]
    with test_pipeline() as p:
        splits = p | beam.Create(batches) | SplitByKey(spec)
        pairs = [
            splits[name] | f"Species[{name}]" >> beam.FlatMap(species_in, name)
            for name in spec.split_names
        ]
        distinct = (
            pairs
            | "Flatten" >> beam.Flatten()
            | "DistinctPairs" >> beam.Distinct()
            | "SplitsPerRecord" >> beam.combiners.Count.PerKey()
            | "Counts" >> beam.Map(lambda species_splits: species_splits[1])
            | "DistinctCounts" >> beam.Distinct()
        )
        # Each of the 40 distinct records (10 copies each) is in exactly one split.
        assert_that(distinct, equal_to([1]))


def test_record_texts_tell_apart_what_differs_and_equal_what_is_equal():
    schema = pa.schema([("a", pa.string()), ("b", pa.string()), ("x", pa.float64())])
    batch = pa.RecordBatch.from_pylist(
        [
            {"a": "1|2", "b": "3", "x": 1.0},
            {"a": "1", "b": "2|3", "x": 1.0},
            {"a": "1|2", "b": "3", "x": 1.0},
            {"a": None, "b": "", "x": None},
            {"a": "", "b": None, "x": None},
        ],
        schema=schema,
    )
    texts = record_texts(batch, ["a", "b", "x"]).to_pylist()
    assert texts[0] == texts[2]
    assert len({texts[0], texts[1], texts[3], texts[4]}) == 4


# --- duplicate declared keys ---------------------------------------------------


def test_shards_come_from_fnv_1a_the_same_in_every_process():
    from transforms.record_keys import cheap_fingerprints

    # FNV-1a 64 of b"a" is 0xaf63dc4c8601ec8c in every implementation.
    hashes = cheap_fingerprints(pa.array(["a", "xa", "a"]).slice(1))
    assert hashes.tolist()[1] == 0xAF63DC4C8601EC8C
    assert hashes[0] != hashes[1]


def test_keys_by_shard_keeps_equal_keys_together():
    keys = pa.array([f"k{i % 50}" for i in range(1000)])
    shards = {}
    for shard, part in keys_by_shard(keys, shards=8):
        for key in part.to_pylist():
            assert shards.setdefault(key, shard) == shard
    assert len(shards) == 50
    assert sum(len(part) for _, part in keys_by_shard(keys, shards=8)) == 1000


def test_repeated_keys_and_their_summary():
    found = sorted(repeated_keys([pa.array(["a", "b", "c"]), pa.array(["b", "b", "d", "c"])]))
    assert found == [("b", 3), ("c", 2)]
    combine = DuplicateKeysFn(max_examples=1)
    accumulators = [combine.create_accumulator(), combine.create_accumulator()]
    accumulators[0] = combine.add_input(accumulators[0], ("c", 2))
    accumulators[1] = combine.add_input(accumulators[1], ("b", 3))
    summary = combine.extract_output(combine.merge_accumulators(accumulators))
    assert summary == {"count": 2, "rows": 5, "examples": [{"key": "b", "rows": 3}]}


def test_duplicate_declared_keys_are_found_over_all_batches(tmp_path):
    batches = [
        pa.RecordBatch.from_pydict({"id": pa.array([1, 2, 3], pa.int64())}),
        pa.RecordBatch.from_pydict({"id": pa.array([3, 4, 5, 3], pa.int64())}),
        pa.RecordBatch.from_pydict({"id": pa.array([2], pa.int64())}),
    ]
    with test_pipeline() as p:
        found = p | beam.Create(batches) | FindDuplicateKeys("id", str(tmp_path))
        assert_that(
            found,
            equal_to(
                [
                    {
                        "count": 2,
                        "rows": 5,
                        "examples": [{"key": "2", "rows": 2}, {"key": "3", "rows": 3}],
                    }
                ]
            ),
        )


def test_unique_keys_give_an_empty_summary(tmp_path):
    batches = [pa.RecordBatch.from_pydict({"id": pa.array(["a", "b"])})]
    with test_pipeline() as p:
        found = p | beam.Create(batches) | FindDuplicateKeys("id", str(tmp_path))
        assert_that(found, equal_to([{"count": 0, "rows": 0, "examples": []}]))


# --- streaming without a timestamp column -------------------------------------


def test_admission_and_lateness_work_on_the_publish_time():
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_pipeline import TestPipeline

    from transforms.admission import AdmitOnTime

    start = 1_767_225_600
    lateness = 5

    def row(key: str, offset: int) -> TimestampedValue:
        values = {"species": "Adelie", "bill": None, "mass": 1, "island": None, "price": 1.0}
        element = {**values, RECORD_KEY: key, EVENT_TIME: start + offset}
        return TimestampedValue(element, start + offset)

    stream = (
        TestStream()
        .advance_watermark_to(start)
        .add_elements([row("m1", 1), row("m2", 30)])
        .advance_watermark_to(start + 60 + lateness + 1)
        .add_elements([row("late", 2), row("m3", 70)])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        admission = p | stream | AdmitOnTime(SPEC, lateness, 3600)
        admitted = (
            admission.admitted
            | "Keys" >> beam.Map(lambda r: r[RECORD_KEY])
            | "AdmittedToGlobal" >> beam.WindowInto(beam.window.GlobalWindows())
        )
        late = (
            admission.late
            | "LateKeys" >> beam.Map(lambda d: (json.loads(d["line"])[RECORD_KEY], d["column"]))
            | "LateToGlobal" >> beam.WindowInto(beam.window.GlobalWindows())
        )
        assert_that(admitted, equal_to(["m1", "m2", "m3"]), label="Admitted")
        assert_that(late, equal_to([("late", EVENT_TIME)]), label="Late")


def test_keys_wait_in_files_and_only_their_paths_are_shuffled(tmp_path):
    """Each bundle's keys are written once, one record batch per shard, and a
    shard read back from every file holds exactly the keys hashed to it."""
    from transforms.record_keys import _SpillKeysByShardDoFn, shard_keys

    keys = pa.array([f"k{i % 700}" for i in range(2000)])
    spill = _SpillKeysByShardDoFn("id", str(tmp_path), shards=8, file_rows=1000)
    outputs = []
    for part in (keys.slice(0, 1200), keys.slice(1200)):  # two bundles
        spill.start_bundle()
        for start in range(0, len(part), 300):
            batch = pa.RecordBatch.from_arrays([part.slice(start, 300)], ["id"])
            outputs += list(spill.process(batch))
        outputs += [windowed.value for windowed in spill.finish_bundle()]
    # 1,200 rows: a file at 1,200 (>= 1,000) then none at the end; 800: one at the end.
    assert len({path for _, path in outputs}) == 2 == len(list(tmp_path.iterdir()))
    by_shard: dict = {}
    for shard, path in outputs:
        by_shard.setdefault(shard, []).append(path)
    expected = {shard: sorted(part.to_pylist()) for shard, part in keys_by_shard(keys, shards=8)}
    got = {
        shard: sorted(pa.concat_arrays(shard_keys(shard, paths)).to_pylist())
        for shard, paths in by_shard.items()
    }
    assert got == expected
    spill.start_bundle()
    assert list(spill.finish_bundle() or []) == []  # an empty bundle writes nothing
