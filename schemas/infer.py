"""Schema inference: a first dataset spec from a sample of a CSV file.

    python -m schemas.infer DATA.csv --label COL [--sample_rows N] > spec.yaml

reads the header and at most N rows (default 10,000) of DATA, one line at a
time, so that its memory does not grow with the file; DATA is a local path or
any Beam filesystem path, plain or gzip. It prints a commented spec: each
column's type (int, float, string or timestamp), whether it is required, the
null tokens seen, `allowed` values of low-cardinality strings, key and
event-time candidates, the label and its kind, one default feature per column
and an 80/10/10 split. What a sample cannot decide is a comment, not a rule:
observed ranges in particular, since a min/max taken from one month's sample
would make next month's data dead letters (TFDV's infer_schema likewise keeps
ranges out of the schema).

The printed spec validates with `schemas.spec` and runs as it is; the same
data always gives the same text (nothing depends on the clock or on set order).
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import datetime as dt
import gzip
import io
import itertools
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import IO

import yaml

from schemas.spec import NAME_PATTERN, RECORD_KEY, SpecError, parse_spec

DEFAULT_SAMPLE_ROWS = 10_000
# Texts that exports from R, pandas, databases and spreadsheets write for a
# missing value. One seen anywhere in the sample goes into the spec's
# top-level null_tokens (the empty field always means missing).
NULL_TOKEN_CANDIDATES = ("NA", "N/A", "NULL", "null", "\\N", "nan", "NaN", "None")
# A string column with at most this many distinct values, each seen twice on
# average, gets `allowed` (TFDV's string domains are the same idea).
MAX_ALLOWED_VALUES = 20
# Characters of a typical value above which a string column is free text
# (comments, descriptions), which gets no `allowed`.
LONG_TEXT = 25
# The share of a column's sampled values that may fail its type (they become
# dead letters in the job, whose default --max_bad_fraction is 5%).
BAD_VALUE_SHARE = 0.01
# Names that say a column is a record id, or that its integers are times.
_KEY_NAME = re.compile(r"(^id$|_id$|^id_|_key$|^key$|uuid|guid)", re.IGNORECASE)
_CAMEL_KEY_NAME = re.compile(r"([a-z]Id|[a-z]ID|^ID|[a-z]Key)$")
_TIME_NAME = re.compile(r"(time|date|timestamp|epoch|_at$|_ts$|^ts$)", re.IGNORECASE)
# Epoch seconds a time-named integer column must lie in to be read as a
# timestamp: 1973-03-03 .. 2096-10-02 (smaller numbers are more likely counts).
_EPOCH_RANGE = (100_000_000, 4_000_000_000)
_INT_TEXT = re.compile(r"[+-]?\d+")
# Classes that name the positive side of a two-valued string label.
_POSITIVE_WORDS = ("1", "yes", "y", "true", "t", "positive", "pos")
_CANDIDATE_DELIMITERS = (",", "\t", ";", "|")


class InferError(ValueError):
    """The data cannot be turned into a spec (the message says why)."""


class InferBug(RuntimeError):
    """The inferred spec does not validate: a defect of this module, not of the data."""


@dataclasses.dataclass
class Sample:
    """The header and up to `limit` rows of a CSV file, as field texts."""

    names: list[str]
    rows: list[list[str]]
    delimiter: str
    quoted_newlines: bool


@dataclasses.dataclass
class ColumnProfile:
    """What the sample says about one column."""

    name: str
    type: str  # int | float | string | timestamp
    present: list[str]  # the non-missing texts, whitespace-trimmed
    missing: int
    empty: int  # of the missing, how many were the empty field
    null_tokens: list[str]  # the candidate tokens seen in this column
    distinct: int
    numbers: list[float] = dataclasses.field(default_factory=list)  # int/float/timestamp
    bad: list[str] = dataclasses.field(default_factory=list)  # texts not of the type

    @property
    def required(self) -> bool:
        return self.missing == 0 and bool(self.present)


# --- reading the sample ------------------------------------------------------


def open_binary(path: str) -> IO[bytes]:
    """A binary stream of the file's (decompressed) bytes; read lazily."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", path):
        from apache_beam.io.filesystems import FileSystems  # remote paths only

        return FileSystems.open(path)  # decompresses .gz by its extension
    # The caller closes it (gzip.open's file closes the file it opened).
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_sample(handle: IO[bytes], limit: int) -> Sample:
    """The header and the first `limit` rows of a CSV stream. Reads line by
    line and stops after the last row it needs, whatever the file's size."""
    text = io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline="")
    try:
        return _sample_from_lines(text, limit)
    finally:
        text.detach()  # the caller owns `handle`: closing the wrapper would close it


def _sample_from_lines(text: IO[str], limit: int) -> Sample:
    first = text.readline()
    if not first.strip():
        raise InferError("the file is empty: a header line is needed")
    first = first.removeprefix("\ufeff")
    delimiter = max(_CANDIDATE_DELIMITERS, key=first.count)
    # itertools.chain, not a generator's `yield from`: closing such a generator
    # would close the file it delegates to.
    reader = csv.reader(itertools.chain([first], text), delimiter=delimiter)
    names = [name.strip() for name in next(reader)]
    rows: list[list[str]] = []
    quoted_newlines = False
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip() and len(names) > 1):
            continue  # a blank line
        quoted_newlines = quoted_newlines or any("\n" in f or "\r" in f for f in row)
        rows.append(row)
        if len(rows) >= limit:
            break  # before the reader asks for another line
    return Sample(names, rows, delimiter, quoted_newlines)


# --- profiling columns ---------------------------------------------------------


def profile_column(name: str, texts: list[str]) -> ColumnProfile:
    """Type, presence and null tokens of one column from its sampled texts."""
    present, tokens, missing, empty = [], set(), 0, 0
    for raw in texts:
        text = raw.strip()
        if text == "":
            missing += 1
            empty += 1
        elif text in NULL_TOKEN_CANDIDATES:
            missing += 1
            tokens.add(text)
        else:
            present.append(text)
    column_type, numbers, bad = _infer_type(name, present)
    return ColumnProfile(
        name=name,
        type=column_type,
        present=present,
        missing=missing,
        empty=empty,
        null_tokens=sorted(tokens),
        distinct=len(set(present)),
        numbers=numbers,
        bad=bad,
    )


def _infer_type(name: str, present: list[str]) -> tuple[str, list[float], list[str]]:
    """The column's type, its values as numbers (int, float, timestamp) and the
    texts that are not of that type. Real exports hold a stray bad value now and
    then; a type that all but BAD_VALUE_SHARE of the values take wins, and the
    others are shown in a comment (the job makes their rows dead letters)."""
    if not present:
        return "string", [], []
    tolerated = math.floor(BAD_VALUE_SHARE * len(present))
    for strict in (True, False):
        allowance = 0 if strict else tolerated
        for column_type, parse in (
            ("timestamp", lambda t: _epoch_seconds(name, t)),
            ("int", _int),
            ("float", _finite_float),
            ("timestamp", _timestamp),
        ):
            numbers, bad = [], []
            for text in present:
                value = parse(text)
                if value is None:
                    bad.append(text)
                    if len(bad) > allowance:
                        break
                else:
                    numbers.append(float(value))
            if len(bad) <= allowance and numbers:
                return column_type, numbers, bad
    return "string", [], []


def _int(text: str) -> int | None:
    if _INT_TEXT.fullmatch(text) and -(2**63) <= int(text) < 2**63:
        return int(text)
    return None


def _epoch_seconds(name: str, text: str) -> int | None:
    """Integer epoch seconds, only in a column whose name says it holds times."""
    value = _int(text)
    low, high = _EPOCH_RANGE
    if value is None or not _TIME_NAME.search(name) or not low <= value <= high:
        return None
    return value


def _finite_float(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _timestamp(text: str) -> int | None:
    """Epoch seconds read by the batch job's own parser, so that a column
    declared timestamp here parses there. Numbers are not taken as times here."""
    from transforms.validation import parse_timestamp_text

    if _finite_float(text) is not None:
        return None
    return parse_timestamp_text(text, dt.UTC)


def _has_offset(text: str) -> bool:
    return text.endswith(("Z", " UTC")) or bool(re.search(r"[+-]\d{2}:?\d{2}$", text))


# --- writing the spec ------------------------------------------------------------


def _scalar(value: str | int | float) -> str:
    """A YAML scalar that reads back as exactly `value`."""
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # YAML 1.1 (PyYAML) reads 1e+20 as a string: its floats need a dot.
        mantissa, e, exponent = repr(value).partition("e")
        return (mantissa if "." in mantissa else mantissa + ".0") + e + exponent
    if re.fullmatch(NAME_PATTERN, value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value, ensure_ascii=False)


def _shown(value: str, width: int = 40) -> str:
    """A sampled text for a comment: one line, bounded."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 4] + '..."'


def _number(value: float, column_type: str) -> str:
    if column_type == "int":
        return str(int(value))
    if column_type == "timestamp":
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{value:.6g}"


def _valid_name(header: str) -> bool:
    return bool(re.fullmatch(NAME_PATTERN, header)) and len(header) <= 100


def suggested_name(header_name: str) -> str:
    """A spec name for a header name: runs of other characters become _."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", header_name).strip("_")[:100] or "column"
    return "c_" + name if name[0].isdigit() else name


def _spec_name(path: str) -> str:
    stem = Path(path.rstrip("/")).name
    for suffix in (".gz", ".csv", ".tsv", ".txt"):
        stem = stem.removesuffix(suffix)
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem).strip("_") or "dataset"
    return ("d_" + name if name[0].isdigit() else name)[:100]


def _allowed(profile: ColumnProfile, label: str | None = None) -> list[str] | None:
    if profile.type != "string" or not profile.present:
        return None
    if profile.name != label and _is_text(profile):
        return None  # free text: its next value is a new one
    if profile.distinct <= MAX_ALLOWED_VALUES and len(profile.present) >= 2 * profile.distinct:
        return sorted(set(profile.present))
    return None


def _is_text(profile: ColumnProfile) -> bool:
    """Sentences rather than categories: a median length over LONG_TEXT."""
    return statistics.median_low(sorted(len(t) for t in profile.present)) > LONG_TEXT


def _mostly_distinct(profile: ColumnProfile) -> bool:
    return profile.distinct > MAX_ALLOWED_VALUES and profile.distinct > len(profile.present) / 2


def _looks_unique(profile: ColumnProfile) -> bool:
    return (
        profile.type in ("string", "int")
        and profile.required
        and profile.distinct == len(profile.present) > 1
    )


def _zero_one(profile: ColumnProfile) -> bool:
    return profile.type == "int" and set(profile.numbers) <= {0.0, 1.0}


def _positive_class(classes: list[str]) -> tuple[str, str]:
    """The positive class of a two-valued string label, and why it was chosen."""
    for word in _POSITIVE_WORDS:
        for value in classes:
            if value.lower() == word:
                return value, f"{value!r} reads as the positive answer"
    return classes[1], "the second class in sorted order (there is no yes/true/1)"


def _median(numbers: list[float], column_type: str) -> int | float:
    middle = statistics.median_low(sorted(numbers))
    return int(middle) if column_type in ("int", "timestamp") else float(f"{middle:.6g}")


def infer_spec(
    sample: Sample, source: str = "data.csv", label: str | None = None, limit: int | None = None
) -> str:
    """The commented spec YAML for a sample."""
    names = sample.names
    if names and names[0].startswith("#"):
        raise InferError(
            f"the first line must be the header, and {names[0][:60]!r} looks like a comment: "
            "remove the lines before the header (the job reads every line as a record)"
        )
    duplicated = sorted(n for n, c in collections.Counter(names).items() if c > 1)
    if duplicated:
        raise InferError(f"the header names these columns twice: {', '.join(duplicated)}")
    # A header text that cannot be a spec name ("Culmen Length (mm)") gets one,
    # and the column keeps the text as its `header`, by which the job finds it.
    headers = {}
    for header in names:
        name = header if _valid_name(header) else suggested_name(header)
        while name in headers or (name in names and name != header):
            name += "_"
        headers[name] = header
    names = list(headers)
    if label is not None and label not in headers:
        label = next((name for name, header in headers.items() if header == label), label)
    if RECORD_KEY in names:
        raise InferError(f"the column name {RECORD_KEY} is reserved for the derived record key")
    if not sample.rows:
        raise InferError("the file has a header but no rows to sample")
    short = sum(1 for row in sample.rows if len(row) < len(names))
    profiles = [
        profile_column(name, [row[i] if i < len(row) else "" for row in sample.rows])
        for i, name in enumerate(names)
    ]
    by_name = {p.name: p for p in profiles}
    if label is not None and label not in by_name:
        raise InferError(f"--label {label}: no such column (columns: {', '.join(names)})")
    if label is None:
        raise InferError("--label is needed: the spec names the column the model predicts")
    label_profile = by_name[label]
    if label_profile.type == "timestamp" or not label_profile.present:
        raise InferError(f"--label {label}: a label must be a number or a string")

    key_candidates = [p.name for p in profiles if _looks_unique(p) and p.name != label]
    named_keys = [n for n in key_candidates if _KEY_NAME.search(n) or _CAMEL_KEY_NAME.search(n)]
    key_column = named_keys[0] if len(named_keys) == 1 else None
    time_candidates = [p.name for p in profiles if p.type == "timestamp" and p.required]
    timestamp_column = time_candidates[0] if len(time_candidates) == 1 else None
    null_tokens = sorted({t for p in profiles for t in p.null_tokens})

    rows = len(sample.rows)
    out: list[str] = []
    w = out.append
    w(f"# Inferred by `python -m schemas.infer` from the first {rows} rows of:")
    w(f"#   {source}" + (f"  (--sample_rows {limit})" if limit else ""))
    w("# Review it: types, required, allowed values and the features are guesses from")
    w("# that sample. Observed ranges are comments, not rules: a min/max taken from one")
    w("# sample would turn later data outside it into dead letters.")
    if short:
        w(f"# {short} sampled rows have fewer fields than the header; the job will make")
        w("# them dead letters.")
    w(f"name: {_spec_name(source)}")
    w("")
    if sample.delimiter != "," or sample.quoted_newlines:
        w("csv:")
        if sample.delimiter != ",":
            w(f"  delimiter: {json.dumps(sample.delimiter)}")
        if sample.quoted_newlines:
            w("  # Some quoted fields hold line breaks: each file is then read by one worker.")
            w("  allow_quoted_newlines: true")
        w("")
    if null_tokens:
        w("# Texts seen in the sample in place of a value; like the empty field, they")
        w("# mean missing in every column.")
        w(f"null_tokens: [{', '.join(json.dumps(t) for t in null_tokens)}]")
        w("")

    w("columns:")
    for profile in profiles:
        _write_column(w, profile, rows, label, headers[profile.name])
    w("")

    _write_choice(
        w,
        "timestamp_column",
        timestamp_column,
        time_candidates,
        "event time",
        "Without it there are no aggregates; everything else works.",
    )
    _write_choice(
        w,
        "key_column",
        key_column,
        key_candidates,
        "record key",
        "Without it the job derives a key for each record. A declared key is\n"
        "# checked: duplicates are reported in the manifest.",
    )
    _write_label(w, label_profile)
    w("")
    w("split:")
    w("  percentages: {train: 80, eval: 10, test: 10}")
    w("")
    w("# One default feature per column: a z-score for numbers, a vocabulary for")
    w("# strings, calendar parts for timestamps; none of the label or the key.")
    w("features:")
    used = set(names)
    features = 0
    for profile in profiles:
        if profile.name in (label, key_column):
            continue
        features += _write_features(w, profile, used)
    if not features:
        raise InferError("no column besides the label and the key can be a feature")
    text = "\n".join(out) + "\n"
    try:
        parse_spec(yaml.safe_load(text), source="<inferred spec>")
    except SpecError as error:  # a bug here: the inferred spec must always validate
        raise InferBug(f"the inferred spec does not validate:\n{error}\n{text}") from None
    return text


def _write_column(w, profile: ColumnProfile, rows: int, label: str | None, header: str) -> None:
    w(f"  - name: {_scalar(profile.name)}")
    if header != profile.name:
        w(f"    header: {json.dumps(header)}  # the file's name for it")
    w(f"    type: {profile.type}")
    notes = []
    if not profile.present:
        notes.append(f"no value in the {rows} sampled rows: typed string until known")
    elif profile.type == "timestamp":
        notes.append(
            f"{_number(min(profile.numbers), 'timestamp')} .. "
            f"{_number(max(profile.numbers), 'timestamp')}"
        )
        if all(_INT_TEXT.fullmatch(t) for t in profile.present):
            notes.append("epoch seconds")
        elif not any(_has_offset(t) for t in profile.present):
            notes.append("written without an offset: read as UTC (set timezone: if local)")
    elif profile.type in ("int", "float"):
        numbers = profile.numbers
        notes.append(
            f"observed {_number(min(numbers), profile.type)} .. "
            f"{_number(max(numbers), profile.type)}, mean {statistics.fmean(numbers):.6g}"
        )
    else:
        common = collections.Counter(profile.present).most_common(3)
        examples = ", ".join(_shown(value) for value, _ in common)
        notes.append(f"{profile.distinct} distinct, e.g. {examples}")
    if profile.bad:
        examples = ", ".join(_shown(t) for t in sorted(set(profile.bad))[:3])
        notes.append(f"{len(profile.bad)} not {profile.type}: {examples} (dead letters)")
    if profile.missing:
        seen = [*profile.null_tokens, *(["empty"] if profile.empty else [])]
        notes.append(f"missing in {profile.missing} of {rows} ({', '.join(seen)})")
    w(f"    # {'; '.join(notes)}")
    if profile.name == label:
        if not profile.required:
            w("    # The label stays required: a row without one is a dead letter.")
    elif not profile.required:
        w("    required: false")
    allowed = _allowed(profile, label)
    if allowed is not None:
        w("    # Every value the sample holds; another value makes a row a dead letter.")
        w(f"    allowed: [{', '.join(json.dumps(v, ensure_ascii=False) for v in allowed)}]")
    elif profile.name == label and _zero_one(profile):
        w("    allowed: [0, 1]")


def _write_choice(w, field, chosen, candidates, what, consequence) -> None:
    if chosen is not None:
        others = [c for c in candidates if c != chosen]
        if others:
            w(f"# Other {what} candidates: {', '.join(others)}.")
        w(f"{field}: {_scalar(chosen)}")
    else:
        if candidates:
            w(f"# {what.capitalize()} candidates (none is clear): {', '.join(candidates)}.")
        else:
            w(f"# No {what} candidate in the sample.")
        w(f"# {consequence}")
        w(f"# {field}: COLUMN")
    w("")


def _write_label(w, profile: ColumnProfile) -> None:
    w(f"label: {_scalar(profile.name)}")
    classes = sorted(set(profile.present))
    if profile.type == "float":
        w("label_kind: regression")
    elif profile.type == "int":
        if _zero_one(profile):
            w("# 0/1 in the sample (the column's allowed: [0, 1] above makes that a rule).")
            w("label_kind: binary")
        else:
            w(f"# {profile.distinct} distinct integers: regression; if they are classes,")
            w("# say label_kind: multiclass.")
            w("label_kind: regression")
    elif len(classes) == 2:
        positive, why = _positive_class(classes)
        w(f"# Two classes, {classes[0]!r} and {classes[1]!r}: the positive class (1) is")
        w(f"# {why}.")
        w("label_kind: binary")
        w(f"positive_class: {json.dumps(positive, ensure_ascii=False)}")
    else:
        if len(classes) == 1:
            w("# Only one class in the sample: training needs at least two.")
        w(f"# {len(classes)} classes in the sample.")
        w("label_kind: multiclass")


def _feature_name(base: str, used: set[str]) -> str:
    name = base
    while name in used:
        name += "_"
    used.add(name)
    return name


def _write_features(w, profile: ColumnProfile, used: set[str]) -> int:
    """The default features of one column; returns how many."""
    name, column_type = _scalar(profile.name), profile.type
    fill = ""
    if not profile.present:
        w(f"  # {name}: no value in the sample, so no feature.")
        return 0
    if profile.required and profile.distinct == 1:
        w(f"  # {name}: one value in the whole sample, so no feature.")
        return 0
    if column_type in ("int", "float"):
        feature = _feature_name(f"{profile.name}_z", used)
        steps = "scale_to_z_score"
        if not profile.required:
            value = _median(profile.numbers, column_type)
            fill = f"{{fill_missing: {{value: {_scalar(value)}}}}}, "
            w(f"  # {name} may be missing: filled with the sample's median, {value}.")
        w(f"  - {{name: {feature}, source: {name}, transform: [{fill}{steps}]}}")
        return 1
    if column_type == "string":
        if _mostly_distinct(profile):
            # An id or free text: a vocabulary of it would mostly memorise train rows.
            w(f"  # {name}: mostly distinct values, so no feature (a hash of it, if it helps).")
            return 0
        feature = _feature_name(f"{profile.name}_id", used)
        if not profile.required:
            fill = '{fill_missing: {value: "__missing__"}}, '
        steps = "{vocabulary: {num_oov_buckets: 1}}"
        w(f"  - {{name: {feature}, source: {name}, transform: [{fill}{steps}]}}")
        return 1
    if not profile.required:
        # A fill value would invent an event time; leave the choice to the user.
        w(f"  # {name}: an optional timestamp; add its calendar parts after a fill_missing.")
        return 0
    parts = ["day_of_week", "month"]
    if any(int(s) % 86400 for s in profile.numbers):
        parts.insert(0, "hour")  # not for dates: their hour is always 0
    for part in parts:
        feature = _feature_name(f"{profile.name}_{part}", used)
        w(f"  - {{name: {feature}, source: {name}, transform: {{datetime: {{part: {part}}}}}}}")
    return len(parts)


# --- the command -------------------------------------------------------------------


def infer_file(path: str, label: str | None, sample_rows: int = DEFAULT_SAMPLE_ROWS) -> str:
    with open_binary(path) as handle:
        sample = read_sample(handle, sample_rows)
    return infer_spec(sample, source=path, label=label, limit=sample_rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Infers a commented dataset spec from a sample of a CSV file and "
        "prints it (redirect it to spec.yaml, review it, then run pipeline.preprocess).",
    )
    parser.add_argument("data", help="CSV file with a header: local or gs://, plain or .gz.")
    parser.add_argument("--label", required=True, help="The column the model predicts.")
    parser.add_argument(
        "--sample_rows",
        type=int,
        default=DEFAULT_SAMPLE_ROWS,
        help=f"Rows read from the start of the file (default {DEFAULT_SAMPLE_ROWS}).",
    )
    args = parser.parse_args(argv)
    if args.sample_rows < 1:
        parser.error("--sample_rows must be at least 1")
    try:
        text = infer_file(args.data, args.label, args.sample_rows)
    except (InferError, OSError, UnicodeDecodeError, csv.Error) as error:
        print(f"schemas.infer: {args.data}: {error}", file=sys.stderr)
        return 2
    except InferBug as error:
        print(f"schemas.infer: please report this defect: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
