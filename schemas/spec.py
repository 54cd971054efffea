"""Dataset spec: the YAML file that describes one dataset, loaded into typed objects.

A spec declares the raw columns and their validation rules, the event-time, key
and label columns, the split rule, derived columns and the features with their
transformations. Everything else in the project reads these objects; no other
module knows a column name of a particular dataset.

Loading validates the whole spec before any pipeline is built and before
TensorFlow is imported (this module imports neither Beam nor TensorFlow), so a
bad spec fails within a second with a message naming the field and the problem:

    python -m schemas.spec schemas/taxi.yaml      # validate and summarise a spec
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

# Feature and column names become tf.train.Example keys and Python identifiers in
# the transform graph, so they are restricted to a safe subset.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]


# The column of the record key that the input adapters derive when the spec
# declares no key_column (see DatasetSpec.record_key). No spec column may take it.
RECORD_KEY = "__record_key__"
# Names the job gives columns of its own, beside the spec's (transforms.messages'
# EVENT_TIME, transforms.analyze's PASSTHROUGH_KEY and LABEL_PASSTHROUGH).
RESERVED_COLUMN_NAMES = {
    RECORD_KEY: "the derived record key",
    "__event_time__": "the event time of a stream without timestamp_column",
    "__passthrough_key__": "the record key carried through the transform graph",
    "__raw_label__": "the raw label carried through the transform graph",
}


class SpecError(ValueError):
    """A dataset spec is invalid. `problems` lists each one as 'path: message'."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid dataset spec {source}:\n{lines}")


class ColumnType(enum.StrEnum):
    FLOAT = "float"
    INT = "int"
    STRING = "string"
    # Parsed from text and normalised to int64 seconds since the epoch, UTC.
    TIMESTAMP = "timestamp"


class Kind(enum.StrEnum):
    """What a value is inside the preprocessing graph; decides which steps apply."""

    FLOAT = "float"
    INT = "int"
    STRING = "string"
    TIMESTAMP = "timestamp"
    # An integer id in [0, cardinality): output of vocabulary, bucketize, hash, cross.
    CATEGORICAL = "categorical"


_KIND_OF_COLUMN_TYPE = {
    ColumnType.FLOAT: Kind.FLOAT,
    ColumnType.INT: Kind.INT,
    ColumnType.STRING: Kind.STRING,
    ColumnType.TIMESTAMP: Kind.TIMESTAMP,
}
_NUMERIC = frozenset({Kind.FLOAT, Kind.INT})


class _Strict(BaseModel):
    # Unknown keys are errors: a misspelled option must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Strict):
    """One raw column of the input, with its validation rules."""

    name: Name
    type: ColumnType
    required: bool = True
    # Value used when an optional column is empty. An optional column without a
    # default stays missing and every feature over it must start with fill_missing.
    default: float | int | str | None = None
    min: float | None = None
    max: float | None = None
    allowed: list[str | int] | None = None
    # How to read timestamps written without an offset (IANA name).
    timezone: str = "UTC"
    # Texts that mean missing in this column, besides the spec's top-level
    # null_tokens and the empty field (compared with the whitespace-trimmed text).
    null_tokens: list[str] = Field(default_factory=list)
    # The column's name in the input when that is not a valid spec name: its
    # header text in CSV ("Culmen Length (mm)"), its field name in BigQuery, its
    # key in a JSON message. Default: `name`.
    header: str | None = Field(default=None, min_length=1)
    description: str = ""

    @property
    def kind(self) -> Kind:
        return _KIND_OF_COLUMN_TYPE[self.type]

    @property
    def source_name(self) -> str:
        """What the input calls this column (`header`, else `name`)."""
        return self.header if self.header is not None else self.name


class Split(_Strict):
    """Deterministic split by a stable fingerprint of `key` (default: the declared
    key column; without one, of the whole record, so that identical rows land in
    the same split)."""

    key: Name | None = None
    # Split name -> whole percentage. Must contain train and eval and add up to 100.
    percentages: dict[Name, int] = Field(default_factory=lambda: {"train": 80, "eval": 20})


class DerivedOp(enum.StrEnum):
    ADD = "add"
    SUBTRACT = "subtract"
    MULTIPLY = "multiply"
    DIVIDE = "divide"
    # sqrt(sum of squares of the inputs), e.g. a euclidean distance from deltas.
    NORM = "norm"


class Derived(_Strict):
    """A numeric column computed inside the transform graph from other columns."""

    name: Name
    op: DerivedOp
    inputs: list[Name] = Field(min_length=1)


class AggregateFunction(enum.StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"


_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> int:
    """Seconds in '90s', '5min', '5m', '1h', '2d' or a whole number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int):
        seconds = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([a-z]+)\s*", str(value))
        if not match or match.group(2) not in _DURATION_UNITS:
            raise ValueError(f"{value!r} is not a duration like 30s, 5min, 1h or 2d")
        seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{value!r} must be positive")
    return seconds


Duration = Annotated[int, pydantic.BeforeValidator(parse_duration)]


class Aggregate(_Strict):
    """An event-time windowed aggregate over earlier rows of the same entity.

    For a row of entity k at event time t, with e = floor(t / period) * period,
    the value aggregates the rows of k whose event time lies in [e - window, e).
    A row never sees itself, nor anything at or after e.
    """

    name: Name
    key: list[Name] = Field(min_length=1)
    agg: AggregateFunction
    value: Name | None = None
    window: Duration
    period: Duration
    # Value of the feature when the window holds no rows.
    default: float | int = 0

    @property
    def window_seconds(self) -> int:
        return self.window

    @property
    def period_seconds(self) -> int:
        return self.period

    @property
    def kind(self) -> Kind:
        return Kind.INT if self.agg is AggregateFunction.COUNT else Kind.FLOAT


# --- Transformation steps -------------------------------------------------------
# Each step accepts some input kinds and produces one output kind; the loader
# checks every chain, so a spec that would fail inside TensorFlow fails here.


class _Step(_Strict):
    accepts: ClassVar[frozenset[Kind]] = frozenset()  # input kinds; set per step

    def output_kind(self, input_kind: Kind) -> Kind:
        return input_kind

    def cardinality(self) -> int | None:
        """Number of distinct ids a categorical output can take, if known."""
        return None


class FillMissing(_Step):
    type: Literal["fill_missing"] = "fill_missing"
    value: float | int | str
    accepts: ClassVar[frozenset[Kind]] = frozenset(
        {Kind.FLOAT, Kind.INT, Kind.STRING, Kind.TIMESTAMP}
    )


class Passthrough(_Step):
    type: Literal["passthrough"] = "passthrough"
    accepts: ClassVar[frozenset[Kind]] = frozenset(Kind)


class ScaleToZScore(_Step):
    type: Literal["scale_to_z_score"] = "scale_to_z_score"
    accepts: ClassVar[frozenset[Kind]] = _NUMERIC

    def output_kind(self, input_kind: Kind) -> Kind:
        return Kind.FLOAT


class ScaleTo01(_Step):
    type: Literal["scale_to_0_1"] = "scale_to_0_1"
    accepts: ClassVar[frozenset[Kind]] = _NUMERIC

    def output_kind(self, input_kind: Kind) -> Kind:
        return Kind.FLOAT


class Log1p(_Step):
    type: Literal["log1p"] = "log1p"
    accepts: ClassVar[frozenset[Kind]] = _NUMERIC

    def output_kind(self, input_kind: Kind) -> Kind:
        return Kind.FLOAT


class Clip(_Step):
    type: Literal["clip"] = "clip"
    min: float | None = None
    max: float | None = None
    accepts: ClassVar[frozenset[Kind]] = _NUMERIC

    def output_kind(self, input_kind: Kind) -> Kind:
        return Kind.FLOAT


class Vocabulary(_Step):
    type: Literal["vocabulary"] = "vocabulary"
    top_k: int | None = Field(default=None, gt=0)
    frequency_threshold: int | None = Field(default=None, ge=0)
    num_oov_buckets: int = Field(default=1, ge=0)
    accepts: ClassVar[frozenset[Kind]] = frozenset({Kind.STRING, Kind.INT})

    def output_kind(self, input_kind: Kind) -> Kind:
        return Kind.CATEGORICAL


class Bucketize(_Step):
    """Quantile buckets computed on the train split."""

    type: Literal["bucketize"] = "bucketize"
    num_buckets: int = Field(ge=2)
    accepts: ClassVar[frozenset[Kind]] = _NUMERIC

    def output_kind(self, input_kind: Kind) -> Kind:
        return Kind.CATEGORICAL

    def cardinality(self) -> int:
        return self.num_buckets


class Hash(_Step):
    type: Literal["hash"] = "hash"
    hash_buckets: int = Field(ge=1)
    accepts: ClassVar[frozenset[Kind]] = frozenset({Kind.STRING, Kind.INT, Kind.CATEGORICAL})

    def output_kind(self, input_kind: Kind) -> Kind:
        return Kind.CATEGORICAL

    def cardinality(self) -> int:
        return self.hash_buckets


class DatetimePart(enum.StrEnum):
    HOUR = "hour"  # 0..23
    MINUTE = "minute"  # 0..59
    DAY_OF_WEEK = "day_of_week"  # 0..6, Monday = 0
    DAY_OF_MONTH = "day_of_month"  # 1..31
    DAY_OF_YEAR = "day_of_year"  # 1..366
    MONTH = "month"  # 1..12
    YEAR = "year"


# Exclusive upper bound of each part's values, so that a part can be an embedding id.
DATETIME_PART_CARDINALITY = {
    DatetimePart.HOUR: 24,
    DatetimePart.MINUTE: 60,
    DatetimePart.DAY_OF_WEEK: 7,
    DatetimePart.DAY_OF_MONTH: 32,
    DatetimePart.DAY_OF_YEAR: 367,
    DatetimePart.MONTH: 13,
}


class Datetime(_Step):
    """A calendar part of a timestamp, in UTC."""

    type: Literal["datetime"] = "datetime"
    part: DatetimePart
    accepts: ClassVar[frozenset[Kind]] = frozenset({Kind.TIMESTAMP})

    def output_kind(self, input_kind: Kind) -> Kind:
        return Kind.INT if self.part is DatetimePart.YEAR else Kind.CATEGORICAL

    def cardinality(self) -> int | None:
        return DATETIME_PART_CARDINALITY.get(self.part)


class Cross(_Step):
    """A hashed cross of the feature's `sources` (two or more)."""

    type: Literal["cross"] = "cross"
    hash_buckets: int = Field(ge=1)
    accepts: ClassVar[frozenset[Kind]] = frozenset({Kind.STRING, Kind.INT, Kind.CATEGORICAL})

    def output_kind(self, input_kind: Kind) -> Kind:
        return Kind.CATEGORICAL

    def cardinality(self) -> int:
        return self.hash_buckets


Step = Annotated[
    FillMissing
    | Passthrough
    | ScaleToZScore
    | ScaleTo01
    | Log1p
    | Clip
    | Vocabulary
    | Bucketize
    | Hash
    | Datetime
    | Cross,
    Field(discriminator="type"),
]
STEP_TYPES: dict[str, type[_Step]] = {
    cls.model_fields["type"].default: cls
    for cls in Step.__origin__.__args__  # type: ignore[attr-defined]
}
# Steps that turn values into ids; nothing numeric can follow them.
_TERMINAL_STEPS = ("vocabulary", "bucketize", "hash", "cross")


def _normalise_step(raw: Any) -> Any:
    """Accepts `log1p`, `{bucketize: {num_buckets: 10}}` or `{type: bucketize, ...}`."""
    if isinstance(raw, str):
        return {"type": raw}
    if isinstance(raw, dict) and len(raw) == 1 and "type" not in raw:
        ((name, params),) = raw.items()
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ValueError(f"parameters of step '{name}' must be a mapping, got {params!r}")
        return {"type": name, **params}
    return raw


class Feature(_Strict):
    """One output feature: a source (or sources, for a cross) and a chain of steps."""

    name: Name
    source: Name | None = None
    sources: list[Name] | None = None
    transform: list[Step] = Field(min_length=1)
    description: str = ""

    @pydantic.field_validator("transform", mode="before")
    @classmethod
    def _steps_as_list(cls, value: Any) -> Any:
        steps = value if isinstance(value, list) else [value]
        normalised = []
        for step in steps:
            step = _normalise_step(step)
            name = step.get("type") if isinstance(step, dict) else None
            if isinstance(name, str) and name not in STEP_TYPES:
                hint = difflib.get_close_matches(name, STEP_TYPES, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ValueError(
                    f"unknown transformation '{name}'{suggestion}; "
                    f"known: {', '.join(sorted(STEP_TYPES))}"
                )
            normalised.append(step)
        return normalised

    @property
    def input_names(self) -> list[str]:
        return list(self.sources or []) + ([self.source] if self.source else [])


class CsvFormat(_Strict):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    # 'auto' treats a file whose first line names the spec's columns as having a header.
    header: Literal["auto", "present", "absent"] = "auto"
    # Whether a quoted field may hold line breaks (RFC 4180). Off by default: then
    # one line is one record, and large files are split among workers; on, a file
    # is read whole by one worker, since a record's end depends on all quotes before it.
    allow_quoted_newlines: bool = False


class Anomalies(_Strict):
    """Thresholds of the anomaly checks on a run's statistics (pipeline/anomalies.py).

    Each is a share, divergence or distance in [0, 1]; a value above it is an anomaly.
    """

    # Share of a vocabulary feature's eval values that are out of vocabulary.
    max_oov_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    # Jensen-Shannon divergence of a numeric column's histograms, now and in a baseline run.
    numeric_drift: float = Field(default=0.1, ge=0.0, le=1.0)
    # L-infinity distance between a categorical column's value frequencies, now and baseline.
    categorical_drift: float = Field(default=0.1, ge=0.0, le=1.0)
    # How far a [0, 1]-scaled feature may go outside [0, 1] on a split it was not
    # scaled on (eval, test), as a share of its train range, before that is an
    # anomaly. Eval holds values train never saw, so a small excess is expected
    # sampling (the bundled sample's eval reaches 1.002); 5% is a real shift.
    out_of_range_tolerance: float = Field(default=0.05, ge=0.0, le=1.0)


class LabelKind(enum.StrEnum):
    REGRESSION = "regression"
    BINARY = "binary"
    MULTICLASS = "multiclass"


class DatasetSpec(_Strict):
    name: Name
    description: str = ""
    columns: list[Column] = Field(min_length=1)
    # The event time. Optional: without it there are no aggregates, and a
    # streaming job takes each message's publish time as its event time.
    timestamp_column: Name | None = None
    # The record key. Optional: without it the input adapters derive one, in
    # the column RECORD_KEY (see `record_key` and the README).
    key_column: Name | None = None
    # Texts that mean missing in every column, besides the empty field.
    null_tokens: list[str] = Field(default_factory=list)
    label: Name
    # What the label is (LabelKind); None: inferred from the label column (see
    # `label_kind`). Read from the spec's `label_kind` key: the resolved value
    # is the property of that name.
    declared_label_kind: LabelKind | None = Field(default=None, alias="label_kind")
    # Binary labels given as strings (or ints other than 0/1): the class that is 1.
    positive_class: str | int | None = None
    split: Split = Field(default_factory=Split)
    aggregates: list[Aggregate] = Field(default_factory=list)
    derived: list[Derived] = Field(default_factory=list)
    features: list[Feature] = Field(min_length=1)
    # Escape hatch: 'package.module:function' taking the dict of input tensors
    # (raw and derived columns) and returning extra output features.
    preprocessing_fn: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    csv: CsvFormat = Field(default_factory=CsvFormat)
    # Streaming only: the Pub/Sub message attribute that carries the event time
    # (RFC 3339 or epoch milliseconds, Pub/Sub's convention). It fills the
    # timestamp column; when the message body also has that column, they must agree.
    timestamp_attribute: str | None = Field(default=None, min_length=1)
    # Left out of model_dump and so of spec_hash: thresholds only judge statistics
    # and change no output, so tuning them must not make the streaming job refuse
    # the batch run's transform_fn, and specs without the section keep their hash.
    anomalies: Anomalies = Field(default_factory=Anomalies, exclude=True)

    # Filled in by load_spec: hash of the file's canonical content, for the manifest.
    spec_hash: str = ""

    @pydantic.field_validator("positive_class", mode="before")
    @classmethod
    def _positive_class_is_not_a_boolean(cls, value: Any) -> Any:
        # YAML reads an unquoted yes/no/true/false as a boolean, which would
        # silently become the int 1 or 0.
        if isinstance(value, bool):
            raise ValueError(f'{value} is a YAML boolean: quote the class, e.g. "yes"')
        return value

    def column(self, name: str) -> Column:
        return self._columns_by_name()[name]

    def _columns_by_name(self) -> dict[str, Column]:
        return {column.name: column for column in self.columns}

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def record_key(self) -> str:
        """The record key's column in validated rows: the declared key column, or
        RECORD_KEY, the string key the input adapters derive without one."""
        return self.key_column or RECORD_KEY

    @property
    def derives_record_key(self) -> bool:
        return self.key_column is None

    @property
    def split_key(self) -> str | None:
        """The column whose fingerprint splits rows; None: the whole record's."""
        return self.split.key or self.key_column

    def missing_tokens(self, column: Column | str) -> frozenset[str]:
        """The texts that mean missing in `column`: the empty field, the spec's
        null_tokens and the column's own."""
        if isinstance(column, str):
            column = self.column(column)
        return frozenset(["", *self.null_tokens, *column.null_tokens])

    @property
    def label_kind(self) -> str:
        """'regression', 'binary' or 'multiclass': the declared label_kind, else
        inferred from the label column: float -> regression; int allowed only
        0 and 1 -> binary; other int -> regression; string with a positive_class
        -> binary; other string -> multiclass."""
        if self.declared_label_kind is not None:
            return self.declared_label_kind.value
        label = self.column(self.label)
        if label.type is ColumnType.STRING:
            return "binary" if self.positive_class is not None else "multiclass"
        if label.type is ColumnType.INT and self.positive_class is None:
            zero_one = label.allowed is not None and set(label.allowed) <= {0, 1}
            return "binary" if zero_one else "regression"
        if label.type is ColumnType.INT:
            return "binary"
        return "regression"

    @property
    def label_has_classes(self) -> bool:
        """Whether the label's classes come from a vocabulary over train (a
        multiclass label, or a binary one named by its positive_class), rather
        than being the label's own number (regression, binary 0/1)."""
        return self.label_kind == "multiclass" or (
            self.label_kind == "binary" and self.positive_class is not None
        )

    @property
    def split_names(self) -> list[str]:
        return list(self.split.percentages)

    def feature_kinds(self) -> dict[str, tuple[Kind, int | None]]:
        """Output kind and categorical cardinality of every declared feature."""
        kinds = {column.name: (column.kind, None) for column in self.columns}
        kinds.update({aggregate.name: (aggregate.kind, None) for aggregate in self.aggregates})
        kinds.update({derived.name: (Kind.FLOAT, None) for derived in self.derived})
        result: dict[str, tuple[Kind, int | None]] = {}
        for feature in self.features:
            inputs = [kinds[name] for name in feature.input_names]
            kind, cardinality = inputs[0] if len(inputs) == 1 else (Kind.STRING, None)
            for step in feature.transform:
                kind, cardinality = step.output_kind(kind), step.cardinality() or cardinality
            if kind is not Kind.CATEGORICAL:
                cardinality = None
            kinds[feature.name] = result[feature.name] = (kind, cardinality)
        return result


def _check_references(spec: DatasetSpec) -> list[str]:
    """Cross-field rules that pydantic's per-field validation cannot express."""
    problems: list[str] = []
    columns = spec._columns_by_name()

    seen: set[str] = set()
    source_names: set[str] = set()
    for i, column in enumerate(spec.columns):
        where = f"columns[{i}] ({column.name})"
        if column.name in seen:
            problems.append(f"{where}: duplicate column name")
        seen.add(column.name)
        if column.source_name in source_names:
            problems.append(f"{where}: header {column.source_name!r} names another column too")
        source_names.add(column.source_name)
        if column.name in RESERVED_COLUMN_NAMES:
            reserved_for = RESERVED_COLUMN_NAMES[column.name]
            problems.append(f"{where}: the name is reserved for {reserved_for}")
        problems.extend(f"{where}.{p}" for p in _null_token_problems(column.null_tokens))
        numeric = column.kind in _NUMERIC
        if (column.min is not None or column.max is not None) and not numeric:
            problems.append(f"{where}: min/max apply only to float and int columns")
        if column.min is not None and column.max is not None and column.min > column.max:
            problems.append(f"{where}: min {column.min} is greater than max {column.max}")
        if column.allowed is not None and column.type not in (ColumnType.STRING, ColumnType.INT):
            problems.append(f"{where}: allowed values apply only to string and int columns")
        if column.default is not None:
            if column.required:
                problems.append(f"{where}: a required column cannot have a default")
            problems.extend(
                f"{where}: default {p}" for p in _value_problems(column, column.default)
            )
        if column.timezone != "UTC":
            try:
                import zoneinfo

                zoneinfo.ZoneInfo(column.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                problems.append(f"{where}: unknown timezone '{column.timezone}'")

    problems.extend(_null_token_problems(spec.null_tokens))
    if spec.timestamp_column is None:
        if spec.aggregates:
            problems.append("aggregates: aggregates need an event time: set timestamp_column")
        if spec.timestamp_attribute is not None:
            problems.append(
                "timestamp_attribute: it fills the timestamp column: set timestamp_column"
            )

    def must_be_column(field: str, name: str, kinds: set[Kind] | None = None) -> Column | None:
        if name not in columns:
            hint = difflib.get_close_matches(name, columns, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            problems.append(f"{field}: column '{name}' does not exist{suggestion}")
            return None
        column = columns[name]
        if kinds is not None and column.kind not in kinds:
            wanted = " or ".join(sorted(kind.value for kind in kinds))
            problems.append(f"{field}: column '{name}' is {column.type.value}, expected {wanted}")
        return column

    timestamp = (
        must_be_column("timestamp_column", spec.timestamp_column, {Kind.TIMESTAMP})
        if spec.timestamp_column is not None
        else None
    )
    key = (
        must_be_column("key_column", spec.key_column, {Kind.STRING, Kind.INT})
        if spec.key_column is not None
        else None
    )
    label = must_be_column("label", spec.label, {Kind.FLOAT, Kind.INT, Kind.STRING})
    if label is not None:
        problems.extend(_label_problems(spec, label))
    for field, column in (("timestamp_column", timestamp), ("key_column", key), ("label", label)):
        if column is not None and not column.required:
            problems.append(f"{field}: column '{column.name}' must be required")
    split_key = must_be_column("split.key", spec.split_key) if spec.split_key else None
    if split_key is not None and not split_key.required:
        problems.append(f"split.key: column '{split_key.name}' must be required")

    percentages = spec.split.percentages
    for required_split in ("train", "eval"):
        if required_split not in percentages:
            problems.append(f"split.percentages: must include '{required_split}'")
    if any(p <= 0 for p in percentages.values()):
        problems.append("split.percentages: every percentage must be positive")
    if sum(percentages.values()) != 100:
        problems.append(f"split.percentages: add up to {sum(percentages.values())}, not 100")

    # Name -> kind of everything a feature can read, growing as the spec is read in order.
    available: dict[str, Kind] = {c.name: c.kind for c in spec.columns}
    optional_without_default = {
        c.name for c in spec.columns if not c.required and c.default is None
    }
    for i, aggregate in enumerate(spec.aggregates):
        where = f"aggregates[{i}] ({aggregate.name})"
        if aggregate.name in available:
            problems.append(f"{where}: name is already used by a column or aggregate")
        for name in aggregate.key:
            column = must_be_column(f"{where}.key", name, {Kind.STRING, Kind.INT})
            if column is not None and not column.required:
                problems.append(f"{where}.key: column '{name}' must be required")
        if aggregate.agg is AggregateFunction.COUNT:
            if aggregate.value is not None:
                problems.append(f"{where}: count takes no 'value'")
        elif aggregate.value is None:
            problems.append(f"{where}: {aggregate.agg.value} needs a 'value' column")
        else:
            # A missing value is skipped (SQL semantics), so an optional column is fine.
            must_be_column(f"{where}.value", aggregate.value, _NUMERIC)
        if aggregate.window % aggregate.period:
            # Whole periods make [e - W, e) a union of complete period buckets, which
            # is what lets batch pre-aggregate per period and streaming use
            # SlidingWindows(W, P) with the same result.
            problems.append(
                f"{where}: window ({aggregate.window}s) must be a whole multiple of "
                f"period ({aggregate.period}s)"
            )
        if aggregate.kind is Kind.INT and not isinstance(aggregate.default, int):
            problems.append(f"{where}: default of a count must be an integer")
        available[aggregate.name] = aggregate.kind
    for i, derived in enumerate(spec.derived):
        where = f"derived[{i}] ({derived.name})"
        if derived.name in available:
            problems.append(f"{where}: name is already used by a column or derived column")
        for name in derived.inputs:
            if name not in available:
                problems.append(
                    f"{where}: input '{name}' is not a column or earlier derived column"
                )
            elif available[name] not in _NUMERIC:
                problems.append(f"{where}: input '{name}' is {available[name].value}, not numeric")
            elif name in optional_without_default:
                problems.append(f"{where}: input '{name}' may be missing and has no default")
        arity = len(derived.inputs)
        if derived.op in (DerivedOp.SUBTRACT, DerivedOp.DIVIDE) and arity != 2:
            problems.append(f"{where}: {derived.op.value} takes exactly 2 inputs, got {arity}")
        if derived.op in (DerivedOp.ADD, DerivedOp.MULTIPLY) and arity < 2:
            problems.append(f"{where}: {derived.op.value} takes at least 2 inputs")
        available[derived.name] = Kind.FLOAT

    reserved = {spec.label: "the label", spec.record_key: "the key column"}
    feature_names: set[str] = set()
    for i, feature in enumerate(spec.features):
        where = f"features[{i}] ({feature.name})"
        if feature.name in feature_names:
            problems.append(f"{where}: duplicate feature name")
        if feature.name in reserved:
            problems.append(f"{where}: name is {reserved[feature.name]}'s output name")
        feature_names.add(feature.name)

        is_cross = feature.transform[0].type == "cross"
        if is_cross:
            if feature.source is not None or not feature.sources or len(feature.sources) < 2:
                problems.append(f"{where}: a cross takes two or more 'sources' and no 'source'")
        elif feature.source is None or feature.sources is not None:
            problems.append(f"{where}: needs exactly one 'source' ('sources' is for cross)")
        input_kinds = []
        for name in feature.input_names:
            if name not in available:
                hint = difflib.get_close_matches(name, available, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                problems.append(
                    f"{where}: source '{name}' is not a column, derived column or earlier "
                    f"feature{suggestion}"
                )
            else:
                input_kinds.append(available[name])
        if not input_kinds or len(input_kinds) != len(feature.input_names):
            continue  # the problem is reported above; there is nothing to check types on

        if (
            feature.source in optional_without_default
            and feature.transform[0].type != "fill_missing"
        ):
            problems.append(
                f"{where}: column '{feature.source}' is optional without a default, so the "
                f"first step must be fill_missing"
            )
        for name in feature.sources or []:
            if name in optional_without_default:
                problems.append(f"{where}: cross source '{name}' may be missing and has no default")

        kind = input_kinds[0]
        for j, step in enumerate(feature.transform):
            step_where = f"{where}.transform[{j}] ({step.type})"
            if step.type == "cross" and j != 0:
                problems.append(f"{step_where}: cross must be the first step")
            kinds = input_kinds if (step.type == "cross") else [kind]
            for input_kind in kinds:
                if input_kind not in step.accepts:
                    accepted = ", ".join(sorted(k.value for k in step.accepts))
                    problems.append(
                        f"{step_where}: does not apply to {input_kind.value} values "
                        f"(applies to: {accepted})"
                    )
            if step.type == "fill_missing":
                problems.extend(
                    f"{step_where}: value {p}"
                    for p in _kind_value_problems(kind, step.value)  # type: ignore[attr-defined]
                )
            if step.type in _TERMINAL_STEPS and j != len(feature.transform) - 1:
                problems.append(f"{step_where}: must be the last step (it outputs ids)")
            if isinstance(step, Clip) and None not in (step.min, step.max) and step.min > step.max:
                problems.append(f"{step_where}: min is greater than max")
            kind = step.output_kind(kind)
        available[feature.name] = kind
    return problems


def _label_problems(spec: DatasetSpec, label: Column) -> list[str]:
    """label_kind and positive_class against the label column's type and values."""
    kind, positive = spec.label_kind, spec.positive_class
    where = f"label_kind: {kind} label '{label.name}' ({label.type.value})"
    if kind == "regression" and label.type not in (ColumnType.FLOAT, ColumnType.INT):
        return [f"{where}: a regression label must be float or int"]
    if kind == "multiclass" and label.type not in (ColumnType.STRING, ColumnType.INT):
        return [f"{where}: a multiclass label must be string or int"]
    if kind != "binary":
        if positive is not None:
            return [f"positive_class: applies only to binary labels, the label is {kind}"]
        return []
    if label.type is ColumnType.FLOAT:
        return [f"{where}: a binary label must be int 0/1, or string or int with positive_class"]
    if positive is None:
        if label.type is ColumnType.STRING:
            return ["positive_class: a binary string label needs the class that is 1"]
        if label.allowed is None or not set(label.allowed) <= {0, 1}:
            return [f"{where}: an int binary label needs allowed: [0, 1], or a positive_class"]
        return []
    problems = _kind_value_problems(label.kind, positive)
    if problems:
        return [f"positive_class: {p} (the label column is {label.type.value})" for p in problems]
    if label.allowed is not None:
        if positive not in label.allowed:
            problems.append(f"positive_class: {positive!r} is not in the label's allowed values")
        if len(set(label.allowed)) != 2:
            problems.append(
                f"{where}: a binary label takes two values, allowed lists {len(label.allowed)}"
            )
    return problems


def _null_token_problems(tokens: list[str]) -> list[str]:
    problems = []
    for token in tokens:
        if not token.strip():
            problems.append(f"null_tokens: {token!r}: the empty field always means missing")
        elif token != token.strip():
            # Fields are compared after trimming, so such a token could never match.
            problems.append(f"null_tokens: {token!r} has leading or trailing whitespace")
    return problems


def _kind_value_problems(kind: Kind, value: Any) -> list[str]:
    if kind in (Kind.FLOAT,) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return [f"{value!r} is not a number"]
    if kind in (Kind.INT, Kind.TIMESTAMP) and (
        isinstance(value, bool) or not isinstance(value, int)
    ):
        return [f"{value!r} is not an integer"]
    if kind is Kind.STRING and not isinstance(value, str):
        return [f"{value!r} is not a string"]
    return []


def _value_problems(column: Column, value: Any) -> list[str]:
    if column.type is ColumnType.TIMESTAMP:
        return ["is not supported for timestamp columns: a missing event time is an error"]
    problems = _kind_value_problems(column.kind, value)
    if problems:
        return problems
    if column.min is not None and value < column.min:
        problems.append(f"{value!r} is below min {column.min}")
    if column.max is not None and value > column.max:
        problems.append(f"{value!r} is above max {column.max}")
    if column.allowed is not None and value not in column.allowed:
        problems.append(f"{value!r} is not in allowed values")
    return problems


def _format_pydantic_error(error: dict[str, Any], document: dict) -> str:
    path = ""
    node: Any = document
    for part in error["loc"]:
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        if isinstance(part, int):
            path += f"[{part}]"
            name = node.get("name") if isinstance(node, dict) else None
            if isinstance(name, str) and path.count("[") == 1:
                path += f" ({name})"
        elif part in STEP_TYPES:
            continue  # pydantic adds the union member's tag to the path; it is noise here
        else:
            path += f".{part}" if path else str(part)
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field (check its spelling)"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"{path or '<top level>'}: {message}"


def _has(node: dict | list, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def parse_spec(document: Any, source: str = "<spec>") -> DatasetSpec:
    """Validates a parsed YAML document; raises SpecError listing every problem."""
    if not isinstance(document, dict):
        raise SpecError(source, ["<top level>: the spec must be a YAML mapping"])
    try:
        spec = DatasetSpec.model_validate(document)
    except pydantic.ValidationError as error:
        problems = [_format_pydantic_error(e, document) for e in error.errors()]
        raise SpecError(source, problems) from None
    problems = _check_references(spec)
    if problems:
        raise SpecError(source, problems)
    canonical = json.dumps(_canonical_content(spec), sort_keys=True)
    return spec.model_copy(update={"spec_hash": hashlib.sha256(canonical.encode()).hexdigest()})


def _canonical_content(spec: DatasetSpec) -> dict:
    """The spec's content for its hash. Fields added after a spec was written
    are left out while they hold their default, so that such a spec keeps its
    hash (a streaming job compares it with the batch run's)."""
    content = spec.model_dump(mode="json")
    for absent_by_default in ("null_tokens", "declared_label_kind", "positive_class"):
        if _unset(content[absent_by_default]):
            del content[absent_by_default]
    for column in content["columns"]:
        for absent_by_default in ("null_tokens", "header"):
            if _unset(column[absent_by_default]):
                del column[absent_by_default]
    return content


def _unset(value: Any) -> bool:
    # None or an empty list; a set 0 (positive_class: 0) is content.
    return value is None or value == []


def load_spec(path: str) -> DatasetSpec:
    """Reads and validates a spec file (local path or any Beam filesystem path)."""
    try:
        if re.match(r"^[a-z][a-z0-9+.-]*://", path):
            from apache_beam.io.filesystems import FileSystems  # remote specs only

            with FileSystems.open(path) as handle:
                text = handle.read().decode("utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(path, [f"<file>: cannot read the spec: {error}"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(path, [f"<file>: not valid YAML: {error}"]) from None
    return parse_spec(document, source=path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Validates a dataset spec and prints its columns, features and splits."
    )
    parser.add_argument("spec", help="Dataset spec YAML (e.g. schemas/taxi.yaml).")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except SpecError as error:
        print(error, file=sys.stderr)
        return 2
    print(
        f"{spec.name}: {len(spec.columns)} columns, {len(spec.features)} features, "
        f"splits {spec.split.percentages}, spec hash {spec.spec_hash[:12]}"
    )
    for name, (kind, cardinality) in spec.feature_kinds().items():
        print(f"  {name}: {kind.value}" + (f" ({cardinality} ids)" if cardinality else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
