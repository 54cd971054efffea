"""Property-based tests (hypothesis): any input yields rows or dead letters,
never an exception, and any YAML yields a spec or a SpecError (exit code 2).

Each property states the accounting rule of the parser it fuzzes: every input
record comes out exactly once, as a valid row, a dead letter or (CSV) a header.
"""

from __future__ import annotations

import copy
import io
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.sample_data import HEADER
from schemas.spec import SpecError, load_spec, parse_spec
from tests.support import TAXI_SPEC
from transforms.csv_source import layout_from_first_line, read_line_range
from transforms.messages import PubsubMessages
from transforms.validation import InputValidator, LineParser

SPEC = load_spec(str(TAXI_SPEC))
SOURCE = "fuzz.csv"
LAYOUT = layout_from_first_line(SOURCE, 0, ",".join(HEADER), SPEC)
GOOD_FIELDS = [
    "k", "2025-02-03 04:05:06 UTC", "-73.98", "40.75", "-73.97", "40.76", "1", "Midtown",
    "CARD", "CMT", "9.5",
]  # fmt: skip
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Field texts that reach the typed converters: numbers at the edges, timestamps
# in many shapes, quotes, separators, control characters and any unicode.
field_text = st.one_of(
    st.sampled_from(
        ["", " ", "nan", "-inf", "1e400", "-0", "9" * 30, "0x10", "1_000", "2025-02-30",
         "2025-02-03T04:05:06+14:00", "2025-02-03 04:05:06 UTC", "1738555506", '"', '""',
         ",", "\r", "\x00", "CARD", "Midtown"]
    ),
    st.text(max_size=30),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
)  # fmt: skip


def assert_every_record_accounted(parsed, count: int) -> None:
    assert parsed.valid.num_rows + len(parsed.dead_letters) + parsed.header_lines == count
    for record in parsed.dead_letters:
        assert record["reason"], record


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_any_bytes_as_csv_lines_are_rows_or_dead_letters(lines):
    parsed = LineParser(SPEC, {SOURCE: LAYOUT}).parse([(SOURCE, line) for line in lines])
    assert_every_record_accounted(parsed, len(lines))


@FUZZ
@given(st.lists(st.lists(field_text, min_size=9, max_size=13), min_size=1, max_size=10))
def test_near_valid_csv_rows_are_rows_or_dead_letters(rows):
    lines = []
    for fields in rows:
        # Mostly valid fields, with the fuzzed ones dropped into random places.
        merged = GOOD_FIELDS[: len(fields)] + GOOD_FIELDS[len(fields) :]
        for index, text in enumerate(fields[: len(merged)]):
            if index % 3 == len(fields) % 3:
                merged[index] = text
        lines.append(",".join(merged).encode("utf-8", errors="surrogatepass"))
    parsed = LineParser(SPEC, {SOURCE: LAYOUT}).parse([(SOURCE, line) for line in lines])
    assert_every_record_accounted(parsed, len(lines))
    assert parsed.valid.schema.names[: len(HEADER)] == list(HEADER)


def assert_same_parse(first, second) -> None:
    """The same rows, dead letters and header count (in any order)."""

    def rows(batch):
        return sorted(json.dumps(row, sort_keys=True, default=str) for row in batch.to_pylist())

    def letters(records):
        return sorted(json.dumps(record, sort_keys=True) for record in records)

    assert first.valid.schema.equals(second.valid.schema)
    assert rows(first.valid) == rows(second.valid)
    assert letters(first.dead_letters) == letters(second.dead_letters)
    assert first.header_lines == second.header_lines


@FUZZ
@given(
    st.lists(st.lists(field_text, min_size=9, max_size=13), min_size=1, max_size=10),
    st.lists(st.sampled_from([b"", b"\r", b"\r\r"]), min_size=10, max_size=10),
    st.integers(0, 10),
)
def test_the_block_path_parses_exactly_like_the_line_path(rows, endings, header_at):
    """Batches of clean lines skip the per-line Python work (CsvLines' block
    path); whatever it accepts must come out exactly as line by line."""
    lines = []
    for fields, ending in zip(rows, endings, strict=False):
        merged = list(GOOD_FIELDS)
        for index, text in enumerate(fields[: len(merged)]):
            if index % 4 == len(fields) % 4:
                merged[index] = text
        line = ",".join(merged).encode("utf-8", errors="surrogatepass")
        # The reader splits its input at LF, so no line it hands on holds one
        # (a quoted line break only reaches the parser joined, and quoted).
        lines.append(line.replace(b"\n", b"") + ending)
    lines.insert(min(header_at, len(lines)), ",".join(HEADER).encode())
    lines.insert(min(header_at + 1, len(lines)), b"")
    lines.append(b"a,b,c")
    records = [(SOURCE, line) for line in lines]
    parser = LineParser(SPEC, {SOURCE: LAYOUT})
    line_by_line = parser.validate_parts([parser.adapter.line_fields(records)])
    block = parser.adapter.clean_block_fields(records)
    if block is not None:
        assert_same_parse(parser.validate_parts(block), line_by_line)
    assert_same_parse(parser.parse(records), line_by_line)


def test_clean_batches_take_the_block_path():
    lines = [(SOURCE, ",".join(GOOD_FIELDS).encode() + b"\r") for _ in range(50)]
    # Structurally clean lines with bad values still take it, and are dead letters.
    lines[7] = (SOURCE, ",".join([*GOOD_FIELDS[:-1], "abc"]).encode())
    lines[9] = (SOURCE, ",".join([*GOOD_FIELDS[:1], "yesterday", *GOOD_FIELDS[2:]]).encode())
    parser = LineParser(SPEC, {SOURCE: LAYOUT})
    parts = parser.adapter.clean_block_fields(lines)
    assert parts is not None and len(parts) == 1
    block = parser.validate_parts(parts)
    assert block.valid.num_rows == 48
    assert [d["column"] for d in block.dead_letters] == ["fare_amount", "pickup_datetime"]
    assert_same_parse(block, parser.validate_parts([parser.adapter.line_fields(lines)]))


@FUZZ
@given(st.binary(max_size=400), st.integers(1, 64), st.integers(1, 16))
def test_any_bytes_split_into_ranges_read_each_line_once(data, range_bytes, chunk_bytes):
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    read = []
    for start in range(0, max(len(data), 1), range_bytes):
        end = start + range_bytes if start + range_bytes < len(data) else None
        for batch, _ in read_line_range(io.BytesIO(data), start, end, 7, chunk_bytes):
            read.extend(batch)
    assert read == expected


json_value = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def parse_messages(bodies: list[bytes]):
    from apache_beam.io.gcp.pubsub import PubsubMessage

    messages = [PubsubMessage(body, {}) for body in bodies]
    return InputValidator(SPEC, PubsubMessages(SPEC)).parse(messages)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=200), json_value.map(json.dumps).map(str.encode))))
def test_any_message_bytes_are_rows_or_dead_letters(messages):
    validated = parse_messages(messages)
    assert validated.valid.num_rows + len(validated.dead_letters) == len(messages)


@FUZZ
@given(st.dictionaries(st.sampled_from(list(HEADER)), json_value, max_size=len(HEADER)))
def test_messages_with_any_field_values_are_rows_or_dead_letters(changes):
    document = dict(zip(HEADER, GOOD_FIELDS, strict=True))
    document.update(changes)
    validated = parse_messages([json.dumps(document).encode()])
    assert validated.valid.num_rows + len(validated.dead_letters) == 1


# --- the spec loader ------------------------------------------------------------

TAXI_DOCUMENT = yaml.safe_load(TAXI_SPEC.read_text())


def _paths(node, prefix=()):
    """Every (path, value) in a nested document."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


TAXI_PATHS = [path for path, _ in _paths(TAXI_DOCUMENT) if path]


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(TAXI_PATHS), st.one_of(json_value, st.just("__delete__"))),
        min_size=1,
        max_size=4,
    )
)
def test_a_mutated_taxi_spec_is_a_spec_or_a_spec_error(mutations):
    document = copy.deepcopy(TAXI_DOCUMENT)
    for path, value in mutations:
        parent = document
        try:
            for key in path[:-1]:
                parent = parent[key]
            if value == "__delete__":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    try:
        parse_spec(document)
    except SpecError as error:
        assert error.problems


@FUZZ
@given(st.one_of(st.text(max_size=300), json_value.map(yaml.safe_dump)))
def test_any_yaml_text_is_a_spec_or_a_spec_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with pytest.raises(SpecError):
        load_spec(str(path))
