"""Wall time of the batch job with and without the spec's aggregates.

    python -m benchmarks.aggregate_overhead --rows 1000000 [--repeats 2]

Generates --rows taxi trips once, writes a copy of the spec without its
aggregates (and the features built on them), then runs pipeline.preprocess on
the local runner alternately with each spec, --repeats times, and prints every
wall time (as the job's manifest records it) and the ratio of the means.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import yaml

from pipeline.layout import RunLayout


def spec_without_aggregates(spec_path: str, output_path: str) -> None:
    with open(spec_path) as handle:
        document = yaml.safe_load(handle)
    aggregate_names = {aggregate["name"] for aggregate in document.pop("aggregates", [])}
    document["features"] = [
        feature
        for feature in document["features"]
        if not ({feature.get("source")} | set(feature.get("sources") or [])) & aggregate_names
    ]
    with open(output_path, "w") as handle:
        yaml.safe_dump(document, handle, sort_keys=False)


def timed_run(spec: str, data: str, output_dir: str) -> float:
    command = [
        sys.executable, "-m", "pipeline.preprocess", "--spec", spec, "--input", data,
        "--output_dir", output_dir, "--runner", "FnApiRunner", "--overwrite",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    with open(RunLayout(output_dir).manifest_path) as handle:
        return json.load(handle)["wall_seconds"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Trips to generate.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per spec, alternating.")
    parser.add_argument("--spec", default="schemas/taxi.yaml", help="Spec with aggregates.")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aggregate_overhead_") as work:
        data = os.path.join(work, "trips.csv")
        subprocess.run(
            [sys.executable, "-m", "pipeline.sample_data", "--rows", str(args.rows),
             "--output", data],
            check=True, capture_output=True,
        )  # fmt: skip
        plain_spec = os.path.join(work, "without_aggregates.yaml")
        spec_without_aggregates(args.spec, plain_spec)
        times: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(args.repeats):
            for name, spec in (("without", plain_spec), ("with", args.spec)):
                seconds = timed_run(spec, data, os.path.join(work, "out"))
                times[name].append(seconds)
                print(f"{name:>7} aggregates: {seconds:6.1f} s", flush=True)
    mean = {name: sum(values) / len(values) for name, values in times.items()}
    print(
        f"{args.rows} rows: mean {mean['without']:.1f} s without, {mean['with']:.1f} s with "
        f"aggregates; ratio {mean['with'] / mean['without']:.2f}"
    )


if __name__ == "__main__":
    main()
