"""CSV layouts, line parsing and validation: one test per kind of bad row."""

from __future__ import annotations

import datetime as dt
import gzip

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas.spec import parse_spec
from tests.support import test_pipeline
from transforms.csv_source import (
    CsvLayout,
    CsvLines,
    InputError,
    UnreadableTail,
    discover_layouts,
    layout_from_first_line,
)
from transforms.validation import FixedSizeBatches, LineParser, ValidateInput

SOURCE = "gs://bucket/trips.csv"
HEADER = "id,when,distance,count,kind,note"
SPEC_DOC = {
    "name": "tiny",
    "columns": [
        {"name": "id", "type": "string"},
        {"name": "when", "type": "timestamp"},
        {"name": "distance", "type": "float", "min": 0, "max": 100},
        {"name": "count", "type": "int", "required": False, "default": 1, "min": 0},
        {"name": "kind", "type": "string", "allowed": ["a", "b"]},
        {"name": "note", "type": "string", "required": False},
    ],
    "timestamp_column": "when",
    "key_column": "id",
    "label": "distance",
    "features": [{"name": "kind_id", "source": "kind", "transform": "vocabulary"}],
}
SPEC = parse_spec(SPEC_DOC)
LAYOUT = layout_from_first_line(SOURCE, 0, HEADER, SPEC)
GOOD = "r1,2025-03-04 05:06:07 UTC,1.5,2,a,hello"
EPOCH_2025_03_04_050607 = int(dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC).timestamp())
GOOD_ROW = {
    "id": "r1",
    "when": EPOCH_2025_03_04_050607,
    "distance": 1.5,
    "count": 2,
    "kind": "a",
    "note": "hello",
}


def parse(*lines: str | bytes, layout: CsvLayout = LAYOUT):
    records = [(layout.path, line if isinstance(line, bytes) else line.encode()) for line in lines]
    return LineParser(SPEC, {layout.path: layout}).parse(records)


def only_reason(line: str | bytes) -> str:
    parsed = parse(line)
    assert parsed.valid.num_rows == 0
    (record,) = parsed.dead_letters
    assert record["source"] == SOURCE
    return record["reason"]


# --- good rows ----------------------------------------------------------------


def test_good_row_is_typed_and_complete():
    parsed = parse(HEADER, GOOD)
    assert parsed.dead_letters == []
    assert parsed.header_lines == 1
    assert parsed.valid.to_pylist() == [GOOD_ROW]


def test_optional_values_take_the_default_or_stay_missing():
    (row,) = parse("r1,2025-03-04 05:06:07,1.5,,b,").valid.to_pylist()
    assert row["count"] == 1
    assert row["note"] is None


@pytest.mark.parametrize(
    "text",
    [
        "2025-03-04 05:06:07",
        "2025-03-04T05:06:07",
        "2025-03-04 05:06:07 UTC",
        "2025-03-04T05:06:07Z",
        "2025-03-04T07:06:07+02:00",
        "2025-03-04 00:06:07-05:00",
        str(EPOCH_2025_03_04_050607),
    ],
)
def test_timestamp_formats_normalise_to_the_same_utc_instant(text):
    (row,) = parse(f"r1,{text},1.5,2,a,").valid.to_pylist()
    assert row["when"] == EPOCH_2025_03_04_050607


def test_naive_timestamps_are_read_in_the_columns_timezone():
    doc = {**SPEC_DOC, "columns": [dict(c) for c in SPEC_DOC["columns"]]}
    doc["columns"][1]["timezone"] = "America/New_York"
    spec = parse_spec(doc)
    layout = layout_from_first_line(SOURCE, 0, HEADER, spec)
    parser = LineParser(spec, {SOURCE: layout})
    (row,) = parser.parse([(SOURCE, b"r1,2025-07-01 08:00:00,1,1,a,")]).valid.to_pylist()
    assert row["when"] == int(dt.datetime(2025, 7, 1, 12, tzinfo=dt.UTC).timestamp())


def test_quoted_fields_bom_and_crlf():
    parsed = parse('\ufeffr1,2025-03-04 05:06:07,1.5,2,a,"hello, ""world"""\r')
    assert parsed.dead_letters == []
    assert parsed.valid.to_pylist()[0]["note"] == 'hello, "world"'


def test_integral_floats_are_accepted_as_ints():
    (row,) = parse("r1,2025-03-04 05:06:07,1.5,2.0,a,").valid.to_pylist()
    assert row["count"] == 2


def test_reordered_header_maps_columns_by_name():
    header = "note,kind,count,distance,when,id"
    layout = layout_from_first_line(SOURCE, 0, header, SPEC)
    parsed = parse(header, "hi,b,3,7.25,2025-03-04 05:06:07,r9", layout=layout)
    assert parsed.header_lines == 1
    assert parsed.valid.to_pylist() == [
        {
            "id": "r9",
            "when": EPOCH_2025_03_04_050607,
            "distance": 7.25,
            "count": 3,
            "kind": "b",
            "note": "hi",
        }
    ]


def test_file_without_header_uses_spec_order():
    layout = layout_from_first_line(SOURCE, 0, GOOD, SPEC)
    assert layout.header is None
    assert parse(GOOD, layout=layout).valid.num_rows == 1


def test_header_missing_a_column_is_an_input_error():
    with pytest.raises(InputError, match="lacks column"):
        layout_from_first_line(SOURCE, 0, "id,when,distance,count,kind,remark", SPEC)


# --- bad rows: one test per kind ----------------------------------------------


@pytest.mark.parametrize(
    "line, reason",
    [
        ("r1,2025-03-04 05:06:07,1.5,2,a", "expected 6 fields, got 5"),
        ("r1,2025-03-04 05:06:07,1.5,2,a,x,extra", "expected 6 fields, got 7"),
        ("r1,2025-03-04 05:06:07,abc,2,a,", "distance: 'abc' is not a number"),
        ("r1,2025-03-04 05:06:07,1.5,two,a,", "count: 'two' is not an integer"),
        ("r1,2025-03-04 05:06:07,1.5,2.5,a,", "count: '2.5' is not an integer"),
        ("r1,yesterday,1.5,2,a,", "when: 'yesterday' is not a timestamp"),
        ("r1,2025-13-04 05:06:07,1.5,2,a,", "when: '2025-13-04 05:06:07' is not a valid timestamp"),
        ("r1,2025-02-29 05:06:07,1.5,2,a,", "when: '2025-02-29 05:06:07' is not a valid timestamp"),
        (
            "r1,2025-04-31T05:06:07Z,1.5,2,a,",
            "when: '2025-04-31T05:06:07Z' is not a valid timestamp",
        ),
        ("r1,2025-03-04 25:06:07,1.5,2,a,", "when: '2025-03-04 25:06:07' is not a valid timestamp"),
        ("r1,2025-03-04 05:06:07,-0.5,2,a,", "distance: -0.5 is below min 0"),
        ("r1,2025-03-04 05:06:07,100.5,2,a,", "distance: 100.5 is above max 100"),
        ("r1,2025-03-04 05:06:07,1.5,-1,a,", "count: -1 is below min 0"),
        ("r1,2025-03-04 05:06:07,nan,2,a,", "distance: 'nan' is not a finite number"),
        ("r1,2025-03-04 05:06:07,inf,2,a,", "distance: 'inf' is not a finite number"),
        ("r1,2025-03-04 05:06:07,1.5,2,c,", "kind: 'c' is not an allowed value (a, b)"),
        (",2025-03-04 05:06:07,1.5,2,a,", "id: required value is missing"),
        ("r1,,1.5,2,a,", "when: required value is missing"),
        (
            "r1,2025-03-04 05:06:07,1.5,99999999999999999999,a,",
            "count: '99999999999999999999' is not an integer",
        ),
        ("", "empty line"),
        (
            'r1,2025-03-04 05:06:07,1.5,2,a,"unterminated',
            "unbalanced quotes (if quoted fields hold line breaks, set "
            "csv.allow_quoted_newlines in the spec)",
        ),
    ],
)
def test_bad_row_goes_to_dead_letters_with_its_reason(line, reason):
    assert only_reason(line) == reason


def test_invalid_utf8_is_a_dead_letter_with_the_line_kept():
    line = b"r1,2025-03-04 05:06:07,1.5,2,a,caf\xe9"
    (record,) = parse(line).dead_letters
    bad_byte = line.index(b"\xe9")
    assert record["reason"] == f"invalid UTF-8 at byte {bad_byte}"
    assert record["line"].endswith("caf\\xe9")


def test_first_problem_in_column_order_is_reported():
    record = parse("r1,bad,-1,x,z,").dead_letters[0]
    assert record["reason"] == "when: 'bad' is not a timestamp"
    assert record["column"] == "when"


def test_good_and_bad_rows_in_one_batch_are_separated_exactly():
    lines = [GOOD.replace("r1", f"r{i}") for i in range(50)]
    lines[7] = lines[7].replace("1.5", "-3")
    lines[31] = "garbage"
    parsed = parse(*lines)
    assert sorted(r["line"] for r in parsed.dead_letters) == sorted([lines[31], lines[7]])
    assert parsed.valid.column("id").to_pylist() == [f"r{i}" for i in range(50) if i not in (7, 31)]


def test_line_from_an_unlisted_file_is_a_dead_letter():
    parser = LineParser(SPEC, {SOURCE: LAYOUT})
    parsed = parser.parse([("other.csv", GOOD.encode())])
    assert parsed.dead_letters[0]["reason"] == "file was not listed at start"


# --- discovery on real files --------------------------------------------------


def test_discover_layouts_reads_plain_and_gzip_headers(tmp_path):
    plain = tmp_path / "a.csv"
    plain.write_text(HEADER + "\n" + GOOD + "\n")
    zipped = tmp_path / "b.csv.gz"
    zipped.write_bytes(gzip.compress(("\ufeff" + HEADER + "\r\n" + GOOD + "\r\n").encode()))
    headerless = tmp_path / "c.csv"
    headerless.write_text(GOOD + "\n")
    layouts = discover_layouts([str(tmp_path / "*.csv*")], SPEC)
    assert {p.rsplit("/", 1)[1]: layout.header for p, layout in layouts.items()} == {
        "a.csv": HEADER,
        "b.csv.gz": HEADER,
        "c.csv": None,
    }


def test_pattern_matching_nothing_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="matches no file"):
        discover_layouts([str(tmp_path / "nothing*.csv")], SPEC)


# --- the PTransform -----------------------------------------------------------


def test_the_validating_transform_separates_outputs_of_csv_lines():
    bad = "r2,2025-03-04 05:06:07,-1,2,a,"
    lines = [(SOURCE, HEADER.encode()), (SOURCE, GOOD.encode()), (SOURCE, bad.encode())]
    with test_pipeline() as p:
        outputs = (
            p
            | beam.Create(lines)
            | FixedSizeBatches(2)
            | ValidateInput(SPEC, CsvLines(SPEC, {SOURCE: LAYOUT}))
        )
        valid_ids = outputs.valid | beam.FlatMap(lambda batch: batch.column("id").to_pylist())
        assert_that(valid_ids, equal_to(["r1"]), label="CheckValid")
        assert_that(
            outputs.dead_letter,
            equal_to(
                [
                    {
                        "source": SOURCE,
                        "line": bad,
                        "reason": "distance: -1 is below min 0",
                        "column": "distance",
                    }
                ]
            ),
            label="CheckDeadLetters",
        )
        totals = outputs.counts | beam.CombinePerKey(sum)
        assert_that(totals, equal_to([("csv_lines", 3), ("header_lines", 1)]), label="CheckCounts")


def test_batches_must_have_a_positive_size():
    with pytest.raises(ValueError, match="batch_size must be positive"):
        FixedSizeBatches(0)


def test_leap_day_is_a_valid_timestamp():
    (row,) = parse("r1,2024-02-29 23:59:59,1.5,2,a,").valid.to_pylist()
    assert row["when"] == int(dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.UTC).timestamp())


# --- records that span lines, files that end early ----------------------------


def test_a_record_joined_across_a_quoted_line_break_parses_with_the_break_kept():
    from transforms.csv_source import join_quoted_newlines

    physical = [b'r1,2025-03-04 05:06:07 UTC,1.5,2,a,"two', b'lines"', GOOD.encode()]
    ((records, _),) = list(join_quoted_newlines([(physical, [0] * len(physical))]))
    parsed = parse(*records)
    assert parsed.dead_letters == []
    # Plain lines come out first; row order within a batch is not kept.
    assert sorted(parsed.valid.column("note").to_pylist()) == ["hello", "two\nlines"]


def test_a_quote_left_open_at_the_end_is_one_unbalanced_record():
    from transforms.csv_source import join_quoted_newlines

    physical = [GOOD.encode(), b'r2,2025-03-04 05:06:07 UTC,1.5,2,a,"open', b"rest"]
    joined = join_quoted_newlines([(physical, [0] * len(physical))])
    records = [line for batch, _ in joined for line in batch]
    assert records == [GOOD.encode(), physical[1] + b"\n" + physical[2]]
    assert only_reason(records[1]).startswith("unbalanced quotes")


def test_an_unreadable_tail_is_a_dead_letter_holding_the_partial_line():
    from transforms.csv_source import UnreadableTail

    parsed = LineParser(SPEC, {SOURCE: LAYOUT}).parse(
        [(SOURCE, GOOD.encode()), (SOURCE, UnreadableTail(b"r2,2025-0", "EOFError: cut"))]
    )
    assert parsed.valid.num_rows == 1
    (record,) = parsed.dead_letters
    assert record["line"] == "r2,2025-0"
    assert record["reason"].startswith("file ends early") and "EOFError: cut" in record["reason"]


# --- one contract for every source --------------------------------------------


def _csv_source():
    bad = GOOD.replace("r1", "r2").replace(",1.5,", ",100.5,")
    lines = [(SOURCE, line.encode()) for line in (HEADER, GOOD, bad)]
    return CsvLines(SPEC, {SOURCE: LAYOUT}), lines, 1


def _bigquery_source():
    from transforms.bigquery_source import BigQueryRows

    when = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    good = {"id": "r1", "when": when, "distance": 1.5, "count": 2, "kind": "a", "note": "hello"}
    return BigQueryRows(SPEC, "bq://p.d.t"), [good, {**good, "id": "r2", "distance": 100.5}], 0


def _pubsub_source():
    import json

    from apache_beam.io.gcp.pubsub import PubsubMessage

    from transforms.messages import PubsubMessages

    good = {"id": "r1", "when": GOOD.split(",")[1], "distance": 1.5, "count": 2, "kind": "a"}
    good["note"] = "hello"
    bodies = [good, {**good, "id": "r2", "distance": 100.5}]
    messages = [PubsubMessage(json.dumps(b).encode(), {}, message_id=b["id"]) for b in bodies]
    return PubsubMessages(SPEC), messages, 0


@pytest.mark.parametrize(
    "make_source, kind",
    [
        (_csv_source, "csv_lines"),
        (_bigquery_source, "bigquery_rows"),
        (_pubsub_source, "pubsub_messages"),
    ],
)
def test_every_source_has_the_same_outputs_counts_and_counters(make_source, kind):
    from apache_beam.metrics.metric import MetricsFilter

    adapter, raw, header_lines = make_source()
    p = test_pipeline()
    outputs = p | beam.Create([raw]) | ValidateInput(SPEC, adapter)
    rows = outputs.valid | beam.FlatMap(lambda batch: batch.to_pylist())
    assert_that(rows, equal_to([GOOD_ROW]), label="CheckValid")
    reasons = outputs.dead_letter | beam.Map(
        lambda record: (sorted(record), record["reason"], record["column"])
    )
    expected_dead = (
        ["column", "line", "reason", "source"],
        "distance: 100.5 is above max 100",
        "distance",
    )
    assert_that(reasons, equal_to([expected_dead]), label="CheckDeadLetters")
    counts = [(kind, len(raw)), ("header_lines", header_lines)]
    assert_that(outputs.counts, equal_to(counts), label="CheckCounts")
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace("input"))["counters"]
    assert {c.key.metric.name: c.committed for c in counters} == {
        f"{kind}_read": len(raw),
        "header_lines": header_lines,
        "rows_valid": 1,
        "dead_letters": 1,
    }


# --- the column-wise line sorting ----------------------------------------------

_LINE_PIECES = [GOOD.encode(), HEADER.encode(), b"", b" ", b"\t \x0c", b'"q"', b"a\rb", b"x\r"]
_LINE_PIECES += [b"\r\r", "\ufeff".encode(), b"\xef\xbb", b"\xbf,", b"\xff\xfe", b","]


@settings(max_examples=200, deadline=None)
# A byte order mark's bytes cut across two lines are no byte order mark.
@example(lines=[b"r1,\xef\xbb", b"\xbf,x"], with_offsets=False)
@example(lines=[b"r1,\xef", b"\xbb\xbf", b"\r\n"], with_offsets=True)
@given(
    lines=st.lists(
        st.lists(st.sampled_from(_LINE_PIECES), max_size=3).map(b"".join), min_size=1, max_size=40
    ),
    with_offsets=st.booleans(),
)
def test_columnwise_line_sorting_is_the_line_by_line_one(lines, with_offsets):
    """Plain lines, offsets, other records and header count: the same from the
    NumPy passes as from the step per line, whatever quotes, carriage returns,
    byte order marks (whole, or cut across two lines) and blanks the lines hold."""
    adapter = CsvLines(SPEC, {SOURCE: LAYOUT})
    adapter.derive_keys = with_offsets
    records = [
        (SOURCE, line, 1000 + i) if with_offsets else (SOURCE, line) for i, line in enumerate(lines)
    ]
    header = LAYOUT.header.encode()
    assert adapter._sort_lines_columnwise(records, SOURCE, header) == adapter._sort_lines(
        records, SOURCE, header
    )


def test_columnwise_line_sorting_leaves_other_records_to_the_line_by_line_one():
    adapter = CsvLines(SPEC, {SOURCE: LAYOUT})
    other_file = [(SOURCE, GOOD.encode()), ("gs://bucket/other.csv", GOOD.encode())]
    assert adapter._sort_lines_columnwise(other_file, SOURCE, None) is None
    cut = [(SOURCE, GOOD.encode()), (SOURCE, UnreadableTail(b"r9,", "EOFError"))]
    assert adapter._sort_lines_columnwise(cut, SOURCE, None) is None
