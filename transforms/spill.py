"""Spilling a PCollection of RecordBatches to files and reading it back.

A stage that must wait for a result computed over the whole input (the
finished tf.Transform analysis, or window statistics over every row) needs the
rows again afterwards. Local runners keep such a PCollection in memory and hand
it to the next stage in one piece, so memory grows with the input. Written once
as Arrow IPC files, the rows cost disk instead, and only their paths travel.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

# Rows per spill file. The files are spread over the workers that read them back,
# so they must be many and alike: one file per bundle gave a worker all of the
# train split's rows while the other read eval and test, then waited.
SPILL_FILE_ROWS = 65_536


class _DigestingWriter:
    """A writable file that keeps a digest of every byte written through it."""

    def __init__(self, handle):
        self._handle = handle
        self._digest = hashlib.blake2b(digest_size=16)
        self.closed = False

    def write(self, data) -> int:
        self._digest.update(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
        self.closed = True

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _SpillBatchesDoFn(beam.DoFn):
    """RecordBatches -> the paths of Arrow IPC stream files in `directory` holding
    them, a new file every `file_rows` rows or so and at the end of each bundle
    (no output for an empty bundle).

    A file is written under a unique temporary name, then renamed to the digest
    of its bytes. A retried bundle thus never overwrites another bundle's file
    with different rows, and the paths depend only on the rows: ReadSpillFiles
    spreads the files over workers by path, so a rerun gives each worker the
    same rows (see pipeline.workarounds.reproducible_runs).
    """

    def __init__(self, directory: str, file_rows: int = SPILL_FILE_ROWS):
        self._directory = directory
        self._file_rows = file_rows

    def start_bundle(self):
        self._path = self._handle = self._writer = None
        self._rows = 0

    def process(self, batch: pa.RecordBatch) -> Iterable:
        if self._writer is None:
            self._path = FileSystems.join(self._directory, f"writing-{uuid.uuid4().hex}")
            self._handle = _DigestingWriter(FileSystems.create(self._path))
            self._writer = pa.ipc.new_stream(self._handle, batch.schema)
        self._writer.write_batch(batch)
        self._rows += batch.num_rows
        if self._rows >= self._file_rows:
            yield self._close()

    def finish_bundle(self):
        if self._writer is not None:
            yield GlobalWindows.windowed_value(self._close())

    def _close(self) -> str:
        self._writer.close()
        self._handle.close()
        path = FileSystems.join(self._directory, f"{self._handle.hexdigest()}.arrows")
        if FileSystems.exists(path):
            # The same bytes, written by another bundle: keep that file (some
            # file systems refuse to rename onto an existing one).
            FileSystems.delete([self._path])
        else:
            FileSystems.rename([self._path], [path])
        self._path, self._handle, self._writer, self._rows = None, None, None, 0
        return path


def read_spilled_batches(path: str) -> Iterable[pa.RecordBatch]:
    """The RecordBatches of one file written by _SpillBatchesDoFn."""
    with FileSystems.open(path) as handle:
        yield from pa.ipc.open_stream(handle)


class WriteSpillFiles(beam.PTransform):
    """PCollection[pa.RecordBatch] -> PCollection[str] of the paths of Arrow IPC
    files under `directory` that hold the batches (about SPILL_FILE_ROWS rows each).

    The half of SpillToFiles that stays in the producing stage. Flatten the
    paths of several PCollections rather than the batches themselves: a local
    runner materializes a Flatten in memory, with all the rows.
    """

    def __init__(self, directory: str, file_rows: int = SPILL_FILE_ROWS):
        super().__init__()
        self._directory = directory
        self._file_rows = file_rows

    def expand(self, batches):
        return batches | "WriteSpills" >> beam.ParDo(
            _SpillBatchesDoFn(self._directory, self._file_rows)
        )


def _each_copy(grouped: tuple) -> Iterable[str]:
    """(path, [None, ...]) -> the path once per copy written."""
    path, copies = grouped
    for _ in copies:
        yield path


class ReadSpillFiles(beam.PTransform):
    """PCollection[str] of WriteSpillFiles paths -> their batches, the files spread
    over workers."""

    def expand(self, paths):
        return (
            paths
            # Spread by path, not by Reshuffle's random keys: the paths depend
            # only on the rows, so a rerun gives each worker the same files.
            | "KeyByPath" >> beam.Map(lambda path: (path, None))
            | "SpreadSpills" >> beam.GroupByKey()
            # Byte-identical files share a path; each copy is read.
            | "UngroupSpills" >> beam.FlatMap(_each_copy)
            | "ReadSpills" >> beam.FlatMap(read_spilled_batches)
        )


class SpillToFiles(beam.PTransform):
    """PCollection[pa.RecordBatch] -> the same batches, read back from files.

    Use it where the batches must wait for something computed over all of them
    (see the module docstring). `directory` must be visible to every worker (a
    path under the output or --temp_location, never a local mkdtemp). Arrow IPC
    is cheap to write and read, and peak memory stays flat however large the
    input.
    """

    def __init__(self, directory: str, file_rows: int = SPILL_FILE_ROWS):
        super().__init__()
        self._directory = directory
        self._file_rows = file_rows

    def expand(self, batches):
        return (
            batches
            | "Write" >> WriteSpillFiles(self._directory, self._file_rows)
            | "Read" >> ReadSpillFiles()
        )
