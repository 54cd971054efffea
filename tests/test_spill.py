"""SpillToFiles gives back exactly the batches it was given, from files of about
the set number of rows."""

from __future__ import annotations

import glob

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.util import assert_that, equal_to

from tests.support import test_pipeline
from transforms.spill import SpillToFiles, read_spilled_batches


def batches(count: int, rows: int) -> list[pa.RecordBatch]:
    return [
        pa.RecordBatch.from_pydict({"id": [f"{b}-{r}" for r in range(rows)], "x": [1.0] * rows})
        for b in range(count)
    ]


def test_every_row_comes_back_once_from_files_of_about_the_set_size(tmp_path):
    directory = str(tmp_path / "spill")
    with test_pipeline() as p:
        rows = (
            p
            | beam.Create(batches(12, 7))
            | SpillToFiles(directory, file_rows=20)
            | beam.FlatMap(lambda batch: batch.column("id").to_pylist())
        )
        assert_that(rows, equal_to([f"{b}-{r}" for b in range(12) for r in range(7)]))
    files = glob.glob(f"{directory}/*.arrows")
    sizes = [sum(b.num_rows for b in read_spilled_batches(path)) for path in files]
    # A file closes at the first batch that takes it to 20 rows or more.
    assert sum(sizes) == 84 and len(files) >= 4
    assert all(size <= 20 + 6 for size in sizes), sizes
