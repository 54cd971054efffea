"""CPU per row of single steps, each beside the code it replaced, in one process.

    python -m pipeline.sample_data --rows 200000 --messy_fraction 0 --output trips.csv
    python -m pipeline.preprocess --spec schemas/taxi.yaml --input trips.csv --output_dir out
    python -m benchmarks.step_costs --input trips.csv --run_dir out [--spec schemas/taxi.yaml]

Times, with CPU time of this process (the best of --repeats):
  - encoding the run's transformed examples: transforms.example_encoder against
    tfx-bsl's RecordBatchToExamplesEncoder (decoded from the run's train split);
  - TFRecord framing: column-wise (frame_records of an Arrow array) against one
    record at a time;
  - gzip of the framed records: ISA-L at level 2 against zlib at levels 1 and 6;
  - sorting CSV lines into plain and other: the NumPy passes against the step
    per line (batches of --batch_lines lines of --input);
  - the aggregates' block statistics: one grouping per batch against
    PeriodStats.from_rows per (entity, block) (validated batches of --input).
The figures in benchmarks/README.md's "CPU per row" come from this command.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import zlib


def best_microseconds_per_row(step, rows: int, repeats: int) -> float:
    """The smallest CPU time of `repeats` calls of step(), per row, in µs."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        step()
        best = min(best, time.process_time() - started)
    return best / rows * 1e6


def transformed_batch(run_dir: str, rows: int):
    import tensorflow as tf
    from tfx_bsl.coders.example_coder import ExamplesToRecordBatchDecoder

    files = sorted(glob.glob(os.path.join(run_dir, "train", "*.tfrecord.gz")))
    if not files:
        raise SystemExit(f"no train examples under {run_dir}; run pipeline.preprocess first")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(rows)
    return ExamplesToRecordBatchDecoder().DecodeBatch([r.numpy() for r in dataset])


def line_batches(spec, path: str, batch_lines: int, batches: int):
    from transforms.csv_source import layout_from_first_line

    with open(path, "rb") as handle:
        header = handle.readline().rstrip(b"\n")
        lines = [handle.readline().rstrip(b"\n") for _ in range(batch_lines * batches)]
    layout = layout_from_first_line(path, os.path.getsize(path), header.decode(), spec)
    records = [(path, line, i) for i, line in enumerate(lines) if line]
    cut = [records[i : i + batch_lines] for i in range(0, len(records), batch_lines)]
    return layout, cut


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="CSV of sample trips.")
    parser.add_argument("--run_dir", required=True, help="A pipeline.preprocess output dir.")
    parser.add_argument("--spec", default="schemas/taxi.yaml", help="The run's spec.")
    parser.add_argument("--rows", type=int, default=50_000, help="Examples to encode.")
    parser.add_argument("--batch_lines", type=int, default=4096, help="As --parse_batch_size.")
    parser.add_argument("--batches", type=int, default=12, help="CSV batches to time.")
    parser.add_argument("--repeats", type=int, default=5, help="Calls per step; the best counts.")
    args = parser.parse_args(argv)

    from isal import isal_zlib
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    from schemas.spec import load_spec
    from transforms.aggregates import (
        EntityBlocks,
        PeriodStats,
        block_period_stats,
        group_aggregates,
        missing_as_nan,
    )
    from transforms.csv_source import CsvLines
    from transforms.example_encoder import ExampleEncoder
    from transforms.tfrecords import _frame_record, frame_records
    from transforms.validation import LineParser

    spec = load_spec(args.spec)
    results: list[tuple[str, float]] = []

    def timed(label: str, step, rows: int) -> None:
        results.append((label, best_microseconds_per_row(step, rows, args.repeats)))

    batch = transformed_batch(args.run_dir, args.rows)
    rows = batch.num_rows
    timed("encode: example_encoder", lambda: ExampleEncoder().encode(batch), rows)
    tfx_bsl = RecordBatchToExamplesEncoder()
    timed("encode: tfx-bsl", lambda: tfx_bsl.encode(batch), rows)
    encoded = ExampleEncoder().encode(batch)
    records = encoded.to_pylist()
    timed("frame: column-wise", lambda: frame_records(encoded), rows)
    timed("frame: per record", lambda: b"".join(map(_frame_record, records)), rows)
    framed = frame_records(encoded)
    for label, module, level in (
        ("gzip: ISA-L level 2", isal_zlib, 2),
        ("gzip: zlib level 1", zlib, 1),
        ("gzip: zlib level 6", zlib, 6),
    ):

        def compress(module=module, level=level):
            compressor = module.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            return compressor.compress(framed) + compressor.flush()

        timed(label, compress, rows)

    layout, batches = line_batches(spec, args.input, args.batch_lines, args.batches)
    lines = sum(len(b) for b in batches)
    adapter = CsvLines(spec, {layout.path: layout})
    header = layout.header.encode() if layout.header is not None else None
    for label, sort in (
        ("csv lines: NumPy passes", adapter._sort_lines_columnwise),
        ("csv lines: step per line", adapter._sort_lines),
    ):
        timed(label, lambda sort=sort: [sort(b, layout.path, header) for b in batches], lines)

    validator = LineParser(spec, {layout.path: layout})
    valid = [validator.parse(b).valid for b in batches]
    valid_rows = sum(b.num_rows for b in valid)
    timestamp = spec.timestamp_column
    for group in group_aggregates(spec):

        def per_segment(group=group):
            for b in valid:
                grouped = EntityBlocks.of(b, group, timestamp)
                values = {n: missing_as_nan(b.column(n)) for n in group.value_columns}
                for _, r in grouped.segments:
                    PeriodStats.from_rows(grouped.periods[r], {n: c[r] for n, c in values.items()})

        timed(
            f"block stats [{group.label}]: one grouping per batch",
            lambda group=group: [block_period_stats(b, group, timestamp) for b in valid],
            valid_rows,
        )
        timed(f"block stats [{group.label}]: from_rows per segment", per_segment, valid_rows)

    print(f"{rows:,} examples; {lines:,} CSV lines in batches of {args.batch_lines:,}")
    print(f"| step | µs per row (CPU, best of {args.repeats}) |")
    print("| --- | ---: |")
    for label, micros in results:
        print(f"| {label} | {micros:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
