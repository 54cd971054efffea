"""Throughput of the CSV parse-and-validate step alone, without a pipeline.

    python -m benchmarks.parse_throughput --rows 200000 [--repeats 3] [--batch_size 4096]

Generates the rows in memory with the sample-data generator, then times
LineParser over them in batches, best of --repeats, and prints rows/s. The full
benchmark harness (plain tf.Transform baseline, NumPy floor) belongs here too.
"""

from __future__ import annotations

import argparse
import csv
import io
import time

from pipeline.sample_data import HEADER, generate_rows
from schemas.spec import load_spec
from transforms.csv_source import layout_from_first_line
from transforms.validation import LineParser


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="Rows to parse.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed repetitions; best is kept.")
    parser.add_argument("--batch_size", type=int, default=4096, help="Lines per parsed batch.")
    parser.add_argument("--spec", default="schemas/taxi.yaml", help="Dataset spec.")
    args = parser.parse_args(argv)

    spec = load_spec(args.spec)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(generate_rows(args.rows, seed=1))
    lines = [("bench.csv", line.encode()) for line in buffer.getvalue().splitlines()]
    layout = layout_from_first_line("bench.csv", 0, ",".join(HEADER), spec)
    line_parser = LineParser(spec, {"bench.csv": layout})

    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        valid = 0
        for i in range(0, len(lines), args.batch_size):
            valid += line_parser.parse(lines[i : i + args.batch_size]).valid.num_rows
        best = min(best, time.perf_counter() - start)
    print(
        f"parsed {len(lines)} lines ({valid} valid) in {best:.3f} s: "
        f"{len(lines) / best:,.0f} lines/s (best of {args.repeats}, batch {args.batch_size})"
    )


if __name__ == "__main__":
    main()
