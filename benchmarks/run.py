"""The benchmark harness: our pipeline against a plain tf.Transform pipeline and a
NumPy floor doing the same work, plus our full taxi spec.

    python -m benchmarks.run --rows 100000 1000000 [--repeats 2] [--output DIR]

For each size it generates clean sample trips once, then runs, alternating the
order in every repeat so that no variant always runs on a warm or a cold cache:

  ours      pipeline.preprocess with benchmarks/specs/taxi_benchmark.yaml
  baseline  benchmarks.plain_tft (ReadFromText, a dict per row, tf.Transform)
  mltransform  benchmarks.mltransform_baseline (ReadFromText, a dict per row,
            Beam's MLTransform with its tf.Transform operations)
  floor     benchmarks.numpy_floor (pyarrow + NumPy in one process)
  full      pipeline.preprocess with schemas/taxi.yaml (aggregates, validation)
  ours-without-NAME   ours with --disable_workaround NAME, for each speed
            workaround of the local runner (and -speed-workarounds: all of them)

Each run is a fresh process. It records wall time, the CPU time (user +
system) of the process and every descendant it reaped, rows/s and peak memory of
the process and all its children, sampled every 0.2 s from /proc, both as the
sum of their RSS (which counts shared library pages once per process) and as
the sum of their PSS (which splits shared pages among their sharers). Writes
DIR/results.json and, when matplotlib is installed, DIR/results.png (time and
memory against rows); prints a table with the medians (wall, CPU, CPU per 1M
rows) and the ratios ours/baseline, ours/mltransform and ours/floor, of wall and
of CPU time, each between runs of the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from pipeline.children import descendants

VARIANTS = {
    "ours": [
        "-m", "pipeline.preprocess", "--spec", "benchmarks/specs/taxi_benchmark.yaml",
        "--runner", "FnApiRunner",
    ],
    "baseline": ["-m", "benchmarks.plain_tft"],
    "mltransform": ["-m", "benchmarks.mltransform_baseline"],
    "floor": ["-m", "benchmarks.numpy_floor"],
    "full": ["-m", "pipeline.preprocess", "--spec", "schemas/taxi.yaml", "--runner", "FnApiRunner"],
}  # fmt: skip
# The local runner's speed workarounds (pipeline/workarounds/), each measured
# by "ours" without it, and all of them together.
SPEED_WORKAROUNDS = ("early_workers", "parallel_worker_close", "quick_exit")
for _name in SPEED_WORKAROUNDS:
    VARIANTS[f"ours-without-{_name}"] = [*VARIANTS["ours"], "--disable_workaround", _name]
VARIANTS["ours-without-speed-workarounds"] = [
    *VARIANTS["ours"],
    *(flag for name in SPEED_WORKAROUNDS for flag in ("--disable_workaround", name)),
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_SECONDS = 0.2


def _memory_bytes(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process. RSS counts every page the process maps, so
    pages shared between processes (the same TensorFlow libraries loaded by a
    runner and its workers) are counted once per process in a sum; PSS divides
    each shared page among the processes that share it, so PSS sums add up to
    what the processes occupy together."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def tree_memory_bytes(root: int) -> tuple[int, int]:
    """(RSS sum, PSS sum) of `root` and all its descendants."""
    rss_total = pss_total = 0
    for pid in [root, *descendants(root)]:
        rss, pss = _memory_bytes(pid)
        rss_total, pss_total = rss_total + rss, pss_total + pss
    return rss_total, pss_total


def timed_run(command: list[str], log_path: str) -> dict:
    """Runs a command; returns its wall seconds and peak tree memory (RSS and PSS sums)."""
    peak_rss = peak_pss = 0
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample():
            nonlocal peak_rss, peak_pss
            while not done.wait(SAMPLE_SECONDS):
                rss, pss = tree_memory_bytes(process.pid)
                peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        wall = time.perf_counter() - started
        # The harness's only children are the runs, one at a time: the growth of
        # RUSAGE_CHILDREN is this run's tree (its workers are reaped by the runner).
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        done.set()
        sampler.join()
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited {code}; see {log_path}")
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return {
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_memory_bytes": peak_rss,
        "peak_pss_bytes": peak_pss,
    }


def run_variant(name: str, data: str, work: str, log_path: str) -> dict:
    output_dir = os.path.join(work, f"out_{name}")
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [sys.executable, *VARIANTS[name], "--input", data, "--output_dir", output_dir]
    result = timed_run(command, log_path)
    shutil.rmtree(output_dir, ignore_errors=True)
    return result


def summarise(runs: list[dict], rows: int) -> dict:
    walls = [run["wall_seconds"] for run in runs]
    median = statistics.median(walls)
    cpus = [run["cpu_seconds"] for run in runs if "cpu_seconds" in run]
    return {
        "wall_seconds": walls,
        "median_wall_seconds": median,
        "cpu_seconds": cpus,
        "median_cpu_seconds": statistics.median(cpus) if cpus else None,
        "cpu_seconds_per_million_rows": (
            round(statistics.median(cpus) / rows * 1e6, 2) if cpus else None
        ),
        "rows_per_second": round(rows / median),
        "peak_memory_bytes": max(run["peak_memory_bytes"] for run in runs),
        "peak_pss_bytes": max(run.get("peak_pss_bytes", 0) for run in runs),
    }


# The variants ours is compared with, in the order the ratios are printed.
ANCHORS = ("baseline", "mltransform", "floor")


def ours_ratios(size: dict) -> dict:
    """ours over each anchor measured in the same invocation, by median wall time
    (ours_over_NAME, the key results.json has always had) and by median CPU
    time (ours_over_NAME_cpu, when both runs recorded it)."""
    ratios = {}
    ours = size.get("ours")
    for other in ANCHORS:
        if ours is None or other not in size:
            continue
        anchor = size[other]
        ratios[f"ours_over_{other}"] = round(
            ours["median_wall_seconds"] / anchor["median_wall_seconds"], 3
        )
        if ours.get("median_cpu_seconds") and anchor.get("median_cpu_seconds"):
            ratios[f"ours_over_{other}_cpu"] = round(
                ours["median_cpu_seconds"] / anchor["median_cpu_seconds"], 3
            )
    return ratios


def format_ratios(size: dict) -> str:
    """'ours/baseline wall 0.27, CPU 0.45; ...' for the ratios ours_ratios stored."""
    parts = []
    for other in ANCHORS:
        wall = size.get(f"ours_over_{other}")
        if wall is None:
            continue
        cpu = size.get(f"ours_over_{other}_cpu")
        parts.append(f"ours/{other} wall {wall}" + ("" if cpu is None else f", CPU {cpu}"))
    return "; ".join(parts) or "no ratios (ours or its anchors not measured)"


def machine() -> dict:
    with open("/proc/meminfo") as handle:
        memory_kb = int(handle.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(memory_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def plot(results: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = sorted(int(rows) for rows in results["sizes"])
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for variant in results["variants"]:
        measured = [results["sizes"][str(rows)].get(variant) for rows in sizes]
        points = [(rows, m) for rows, m in zip(sizes, measured, strict=True) if m]
        if not points:
            continue
        xs = [rows for rows, _ in points]
        time_axis.plot(xs, [m["median_wall_seconds"] for _, m in points], "o-", label=variant)
        memory_axis.plot(xs, [m["peak_pss_bytes"] / 2**30 for _, m in points], "o-", label=variant)
    for axis, label in ((time_axis, "wall time (s)"), (memory_axis, "peak PSS sum (GiB)")):
        axis.set_xscale("log")
        axis.set_xlabel("rows")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.suptitle(f"{results['machine']['cpus']} CPUs, {results['machine']['memory_gb']} GB")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def _figure(value: float | None) -> str:
    """A table cell: one decimal, or 'n/a' for a figure an older run did not record."""
    return "n/a" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000], help="Sizes.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per variant and size.")
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="Which."
    )
    parser.add_argument("--output", default="benchmarks/results", help="Where results go.")
    parser.add_argument("--work_dir", default=None, help="Scratch space (default: a temp dir).")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="Keep the other sizes already in OUTPUT/results.json (e.g. to add a 10M-row "
        "run of fewer variants to a full 100k and 1M run).",
    )
    args = parser.parse_args(argv)

    os.makedirs(args.output, exist_ok=True)
    work = args.work_dir or tempfile.mkdtemp(prefix="benchmark_")
    results = {"machine": machine(), "variants": list(args.variants), "sizes": {}}
    results_path = os.path.join(args.output, "results.json")
    if args.merge and os.path.exists(results_path):
        with open(results_path) as handle:
            previous = json.load(handle)
        results["sizes"] = previous["sizes"]
        results["variants"] = list(dict.fromkeys(previous["variants"] + args.variants))
    for rows in args.rows:
        data = os.path.join(work, f"trips_{rows}.csv")
        if not os.path.exists(data):
            subprocess.run(
                [sys.executable, "-m", "pipeline.sample_data", "--rows", str(rows),
                 "--messy_fraction", "0", "--output", data],
                cwd=ROOT, check=True, capture_output=True,
            )  # fmt: skip
        runs: dict[str, list[dict]] = {variant: [] for variant in args.variants}
        failures: dict[str, list[str]] = {}
        for repeat in range(args.repeats):
            shift = repeat % len(args.variants)
            for variant in args.variants[shift:] + args.variants[:shift]:
                log_path = os.path.join(work, f"{variant}_{rows}_{repeat}.log")
                try:
                    runs[variant].append(run_variant(variant, data, work, log_path))
                except RuntimeError as error:
                    # One failing variant must not lose the others' measurements.
                    failures.setdefault(variant, []).append(str(error))
                    print(f"{rows} rows, {variant}, run {repeat + 1}: FAILED: {error}", flush=True)
                    continue
                print(f"{rows} rows, {variant}, run {repeat + 1}: {runs[variant][-1]}", flush=True)
        size = {name: summarise(measured, rows) for name, measured in runs.items() if measured}
        if failures:
            size["failures"] = failures
        size.update(ours_ratios(size))
        for variant in list(size):
            if variant.startswith("ours-without-") and "ours" in size:
                for figure in ("median_wall_seconds", "median_cpu_seconds"):
                    if size["ours"][figure] and size[variant][figure]:
                        ratio = size[variant][figure] / size["ours"][figure]
                        size.setdefault("workaround_ratios", {})[f"{variant}/ours {figure}"] = (
                            round(ratio, 3)
                        )
        results["sizes"][str(rows)] = size
        results["sizes"] = dict(sorted(results["sizes"].items(), key=lambda item: int(item[0])))
        with open(results_path, "w") as handle:
            json.dump(results, handle, indent=2)
    plotted = plot(results, os.path.join(args.output, "results.png"))
    print(
        "\n| rows | variant | median wall s | wall s, each run | median CPU s | CPU s per 1M rows "
        "| rows/s | peak RSS sum GiB | peak PSS sum GiB |"
    )
    print("| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for rows, size in results["sizes"].items():
        for variant in results["variants"]:
            if variant not in size:
                continue
            m = size[variant]
            cpu = m.get("median_cpu_seconds")
            print(
                f"| {int(rows):,} | {variant} | {m['median_wall_seconds']:.1f} | "
                f"{', '.join(f'{w:.1f}' for w in m['wall_seconds'])} | "
                f"{_figure(cpu)} | "
                f"{_figure(m.get('cpu_seconds_per_million_rows'))} | "
                f"{m['rows_per_second']:,} | {m['peak_memory_bytes'] / 2**30:.2f} | "
                f"{m.get('peak_pss_bytes', 0) / 2**30:.2f} |"
            )
        print(f"{int(rows):,} rows: {format_ratios(size)}")
        for label, ratio in size.get("workaround_ratios", {}).items():
            print(f"{int(rows):,} rows: {label} {ratio}")
    print(f"results in {args.output}/results.json" + (" and results.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
