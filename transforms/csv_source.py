"""Reading CSV files: header discovery at construction time, and line reading.

Lines are read as bytes, not str, so that a line with invalid UTF-8 becomes a
dead letter instead of killing the job inside Beam's text decoder.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.spec import DatasetSpec

UTF8_BOM = "\ufeff"


class InputError(ValueError):
    """An input pattern matches nothing, or a file cannot be used with the spec."""


@dataclasses.dataclass(frozen=True)
class CsvLayout:
    """Where each spec column sits in one file's records."""

    path: str
    size_bytes: int
    # The header line as text (BOM and line ending removed), or None without a header.
    header: str | None
    # Position of each spec column in a record, in spec column order.
    positions: tuple[int, ...]
    field_count: int
    # True when records hold exactly the spec's columns in the spec's order.
    in_spec_order: bool = dataclasses.field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "in_spec_order", self.positions == tuple(range(self.field_count)))


def expand_patterns(patterns: Sequence[str]) -> list[tuple[str, int]]:
    """(path, size) of every file matched by the patterns; raises InputError on no match."""
    files: dict[str, int] = {}
    for pattern in patterns:
        try:
            matches = FileSystems.match([pattern])[0].metadata_list
        except Exception as error:  # noqa: BLE001 - each filesystem raises its own type
            raise InputError(f"--input {pattern!r}: cannot list files: {error}") from None
        if not matches:
            raise InputError(f"--input {pattern!r} matches no file")
        for metadata in matches:
            files[metadata.path] = metadata.size_in_bytes
    return sorted(files.items())


def _first_line(path: str) -> str:
    compression = CompressionTypes.detect_compression_type(path)
    with FileSystems.open(path, compression_type=compression) as handle:
        raw = handle.readline()
    return raw.decode("utf-8", errors="replace").rstrip("\r\n").removeprefix(UTF8_BOM)


def layout_from_first_line(path: str, size: int, first_line: str, spec: DatasetSpec) -> CsvLayout:
    """Decides whether the file has a header and maps spec columns to positions."""
    names = spec.column_names
    fields = [
        field.strip() for field in next(csv.reader([first_line], delimiter=spec.csv.delimiter), [])
    ]
    looks_like_header = set(names) <= set(fields) or (
        len(fields) == len(names) and len(set(fields) & set(names)) >= len(names) / 2
    )
    mode = spec.csv.header
    if mode == "absent" or (mode == "auto" and not looks_like_header):
        return CsvLayout(path, size, None, tuple(range(len(names))), len(names))
    missing = [name for name in names if name not in fields]
    if missing:
        raise InputError(
            f"{path}: header {first_line!r} lacks column(s) {', '.join(missing)} declared "
            f"in spec '{spec.name}'"
        )
    positions = tuple(fields.index(name) for name in names)
    return CsvLayout(path, size, first_line, positions, len(fields))


def discover_layouts(patterns: Sequence[str], spec: DatasetSpec) -> dict[str, CsvLayout]:
    """Reads the first line of every input file; runs once, at pipeline construction."""
    return {
        path: layout_from_first_line(path, size, _first_line(path), spec)
        for path, size in expand_patterns(patterns)
    }


class ReadCsvLines(beam.PTransform):
    """Reads every line of the matched files as `(path, line_bytes)`, headers included.

    Output: bounded PCollection[tuple[str, bytes]], global window. Gzip is detected
    from the file extension. Headers are recognised and counted by the parser,
    which knows each file's layout.
    """

    def __init__(self, patterns: Sequence[str]):
        super().__init__()
        if not patterns:
            raise InputError("no input patterns")
        self._patterns = list(patterns)

    def expand(self, pbegin):
        reads = [
            pbegin
            | f"ReadLines[{index}]"
            >> beam.io.ReadFromTextWithFilename(
                pattern, coder=coders.BytesCoder(), strip_trailing_newlines=True
            )
            for index, pattern in enumerate(self._patterns)
        ]
        return reads | "FlattenFiles" >> beam.Flatten()
