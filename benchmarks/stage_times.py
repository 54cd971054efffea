"""Where a local run's wall time goes, stage by stage.

    python -m benchmarks.stage_times --input trips.csv [--spec SPEC] [--top 25]
        [-- extra pipeline.preprocess flags]

Runs pipeline.preprocess in this process on the local batch runner and times
each bundle the FnApiRunner executes. It prints the time before the first
stage (imports, graph construction, translation, worker start-up), the number
of stages, the slowest stages, and how much of the run went to stages that
took under a second each: the runner's per-stage overhead, which does not
shrink with fewer rows. Profiling only; the numbers in benchmarks/README.md
come from benchmarks.run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

STARTED = time.monotonic()
SHORT_STAGE_SECONDS = 1.0


def timed_bundles(records: list[tuple[str, float, float]]):
    """Records (stage name, start, seconds) for every bundle the FnApiRunner runs."""
    from pipeline.workarounds.guard import applied
    from pipeline.workarounds.stage_timing import StageTiming

    return applied(StageTiming(records, STARTED))


def summarize(records: list[tuple[str, float, float]], total: float, top: int) -> str:
    if not records:
        return "no stage ran"
    first_start = min(start for _, start, _ in records)
    busy = sum(seconds for _, _, seconds in records)
    short = [seconds for _, _, seconds in records if seconds < SHORT_STAGE_SECONDS]
    lines = [
        f"wall time {total:.1f} s; {first_start:.1f} s before the first stage",
        f"{len(records)} bundles in {len({name for name, _, _ in records})} stages, "
        f"{busy:.1f} s in all",
        f"{len(short)} bundles under {SHORT_STAGE_SECONDS:.0f} s: {sum(short):.1f} s "
        f"(mean {sum(short) / max(len(short), 1) * 1000:.0f} ms)",
        f"after the last stage: {total - max(s + d for _, s, d in records):.1f} s",
        "",
        f"slowest {top}:",
    ]
    for name, start, seconds in sorted(records, key=lambda r: -r[2])[:top]:
        lines.append(f"  {seconds:7.2f} s  at {start:6.1f} s  {name[:110]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="CSV file(s) to preprocess.")
    parser.add_argument(
        "--spec", default="benchmarks/specs/taxi_benchmark.yaml", help="Dataset spec."
    )
    parser.add_argument("--top", type=int, default=25, help="How many slow stages to list.")
    args, extra = parser.parse_known_args(argv)
    extra = [flag for flag in extra if flag != "--"]

    from pipeline import preprocess

    records: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as output_dir, timed_bundles(records):
        code = preprocess.run(
            [
                "--spec", args.spec, "--input", args.input,
                "--output_dir", os.path.join(output_dir, "out"),
                "--runner", "FnApiRunner", *extra,
            ]
        )  # fmt: skip
    print(summarize(records, time.monotonic() - STARTED, args.top))
    return code


if __name__ == "__main__":
    sys.exit(main())
