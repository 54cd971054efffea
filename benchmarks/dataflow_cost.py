"""What a run would cost on Dataflow, extrapolated from the harness's CPU times.

    python -m benchmarks.dataflow_cost [--results benchmarks/results/results.json]
        [--variant full] [--machine_type n1-standard-4]

Reads a results document of benchmarks/run.py (per size and variant the
median CPU seconds, user + system of the whole process tree, and the peak PSS
sum) and prints, as Markdown for benchmarks/README.md, an estimate for 100M and
1B rows of the variant's spec on Dataflow batch workers: vCPU-hours and
worker-hours, the wall time at 10, 50 and 200 workers, and the list price of
the vCPUs, memory, Persistent Disk and Dataflow Shuffle.

The CPU per row is the marginal CPU between the two largest sizes that recorded
CPU time, which leaves out the local run's fixed start-up (imports, graph
construction); with one size only, that size's CPU over its rows, start-up
included. Everything scales linearly from there: no start-up, no autoscaling
ramp, perfect balance over the workers.

The shuffle volume is not measured in a run (the local runner has no such
counter). It is estimated from what the graph groups, step by step, by encoding
the elements those steps would send (see shuffle_components), and given as a
range: from the part sure to grow with the rows to an upper bound at the local
runner's bundle sizes; the printed table says how each step was derived.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

# Dataflow batch list prices, us-central1, in USD. Source: the Dataflow pricing
# page, https://cloud.google.com/dataflow/pricing, which bills batch workers per
# vCPU-hour and per GB-hour of memory, Persistent Disk per GB-hour and Dataflow
# Shuffle per GB of data processed. The stored copies of that page read on
# 2026-12-01 (through the documentation search; this machine has no internet)
# carry the text but not its rate table, so the rates are those Apache Beam
# 2.72.0, the version this project pins, ships for its own Dataflow cost
# benchmark: apache_beam/testing/load_tests/dataflow_cost_consts.py ("Dataflow
# costs for running jobs in us-central1 ... found at
# https://cloud.google.com/dataflow/pricing").
PRICES_AS_OF = "2026-12-01"
PRICES_SOURCE = (
    "https://cloud.google.com/dataflow/pricing, rates as in Apache Beam 2.72.0's "
    "apache_beam/testing/load_tests/dataflow_cost_consts.py"
)
PRICES_REGION = "us-central1"
VCPU_HOUR_USD = 0.056
MEMORY_GB_HOUR_USD = 0.003557
PD_GB_HOUR_USD = 0.000054
SHUFFLE_GB_USD = 0.011


@dataclasses.dataclass(frozen=True)
class MachineType:
    name: str
    vcpus: int
    memory_gb: float


MACHINE_TYPES = {
    machine.name: machine
    for machine in (MachineType("n1-standard-4", 4, 15.0), MachineType("n2-standard-4", 4, 16.0))
}
# A batch job with Dataflow Shuffle (the default for batch) gets a 25 GB boot
# disk per worker (https://cloud.google.com/dataflow/docs/shuffle-for-batch,
# "Disk size considerations").
DISK_GB = 25
TARGET_ROWS = (100_000_000, 1_000_000_000)
WORKER_COUNTS = (10, 50, 200)
# Dataflow Shuffle is billed by the data it processes. Counting each shuffled
# byte twice, once written to the service and once read back, is an assumption
# (the larger of the two readings), not something the page's stored copy states.
SHUFFLE_PASSES = 2

# Inputs of the shuffle estimate that come from the generated data and the code.
CSV_BYTES_PER_ROW = 111  # the generated CSV: 55,391 bytes for 500 rows and the header
PARSE_BATCH_ROWS = 4096  # --parse_batch_size's default: rows per batch of the read stage
# Distinct values a bundle holds of a categorical column whose cardinality the
# spec leaves open (raw strings, vocabulary ids): an assumption; the taxi
# data's zones, payment types and vendors number far fewer.
UNKNOWN_CARDINALITY = 1000


def load_results(path: str) -> dict:
    """A benchmarks/run.py results.json, or a one-size document in the layout of
    results/workarounds_1m.json ({"rows": N, "results": {variant: summary}}),
    as {"machine": ..., "sizes": {rows: {variant: summary}}}."""
    with open(path) as handle:
        document = json.load(handle)
    if "sizes" not in document:
        document = {
            "machine": document.get("machine", {}),
            "sizes": {str(document["rows"]): document["results"]},
        }
    return document


def cpu_seconds_per_row(results: dict, variant: str) -> tuple[float, int, str]:
    """(CPU seconds per row, the size whose run it comes from, how it was derived)."""
    points = sorted(
        (int(rows), size[variant]["median_cpu_seconds"])
        for rows, size in results["sizes"].items()
        if size.get(variant, {}).get("median_cpu_seconds")
    )
    if not points:
        raise ValueError(
            f"no CPU time of variant {variant!r} in the results; rerun benchmarks.run with "
            f"--variants {variant}, which records it"
        )
    if len(points) >= 2:
        (small_rows, small_cpu), (rows, cpu) = points[-2:]
        marginal = (cpu - small_cpu) / (rows - small_rows)
        if marginal > 0:
            return (
                marginal,
                rows,
                (
                    f"marginal CPU between the {small_rows:,}-row run ({small_cpu:.1f} s) and "
                    f"the {rows:,}-row run ({cpu:.1f} s)"
                ),
            )
    rows, cpu = points[-1]
    return (
        cpu / rows,
        rows,
        (f"CPU of the {rows:,}-row run ({cpu:.1f} s) over its rows, start-up included"),
    )


@dataclasses.dataclass(frozen=True)
class ShuffleComponent:
    name: str
    bytes_per_row: float
    basis: str
    # Whether the volume grows with the rows whatever the runner does (the key
    # column), or is a bound that Dataflow's bundle sizes or the data's spread
    # over time may leave far below.
    grows_with_rows: bool = False


def encoded_bytes(element) -> int:
    """The bytes Beam's default coder makes of an element (tuples, ints, and a
    pickle of anything else: Arrow arrays, accumulators)."""
    from apache_beam import coders

    return len(coders.registry.get_coder(object).encode(element))


def measured_key_shard_bytes(batch_rows: int) -> float:
    """Encoded bytes per row of FindDuplicateKeys' shuffled elements: the
    (shard, key file path) pairs of one bundle's key file, every shard present,
    over one read batch's rows (a bundle holds at least one batch, so an upper
    bound). The keys themselves wait in that file, not in the shuffle."""
    from transforms.record_keys import KEY_SHARDS

    path = "gs://bucket/run/_tft_temp/key_spill/keys-" + "0" * 32 + ".arrow"
    return sum(encoded_bytes((shard, path)) for shard in range(KEY_SHARDS)) / batch_rows


def measured_statistics_bytes(
    columns: list[tuple[str, int | None]], rows: int, batch_rows: int
) -> int:
    """Encoded bytes of one StatisticsCombineFn accumulator after `rows` rows in
    `batch_rows`-row batches: what a bundle's partial combine sends to the
    shuffle. Numeric columns get continuous values, so their samples fill up;
    categorical ones draw uniformly from `cardinality` values
    (UNKNOWN_CARDINALITY where the spec gives none)."""
    import numpy as np
    import pyarrow as pa

    from transforms.statistics import NUMERIC, StatisticsCombineFn

    rng = np.random.default_rng(0)
    data = {"row_id": pa.array(np.arange(rows))}
    kinds = []
    for index, (kind, cardinality) in enumerate(columns):
        name = f"c{index}"
        kinds.append((name, kind))
        if kind == NUMERIC:
            data[name] = pa.array(rng.normal(size=rows))
        else:
            data[name] = pa.array(rng.integers(0, cardinality or UNKNOWN_CARDINALITY, rows))
    batch = pa.RecordBatch.from_pydict(data)
    combine = StatisticsCombineFn(kinds, row_id_columns=["row_id"])
    accumulator = combine.create_accumulator()
    for start in range(0, rows, batch_rows):
        accumulator = combine.add_input(accumulator, batch.slice(start, batch_rows))
    return encoded_bytes(accumulator)


def statistics_columns(spec) -> tuple[list, list]:
    """(raw, transformed) statistics columns of the spec as (kind, cardinality)."""
    from transforms.statistics import CATEGORICAL, spec_statistics_columns

    raw, transformed = spec_statistics_columns(spec)
    cardinalities = {name: cardinality for name, (_, cardinality) in spec.feature_kinds().items()}
    raw_columns = [(kind, None) for _, kind in raw]
    transformed_columns = [
        (kind, cardinalities.get(name) if kind == CATEGORICAL else None)
        for name, kind in transformed
    ]
    return raw_columns, transformed_columns


def shuffle_components(
    spec,
    key_shard_bytes=measured_key_shard_bytes,
    statistics_bytes=measured_statistics_bytes,
) -> list[ShuffleComponent]:
    """What the batch job's grouping steps move through the shuffle, per input row.

    Measured, as Beam's default coder encodes them: FindDuplicateKeys' (shard,
    key file) pairs (the keys themselves go to files, a Cloud Storage cost) and
    the statistics accumulators (CombineGlobally: one partial per
    bundle, taken at the smallest bundles this job's reads make, so an upper
    bound). Derived: the aggregates' period statistics (CombinePerKey) and
    window values (a side input), at one (entity, period) cell per row, also an
    upper bound. Left out: what does not grow with the rows (the CSV byte
    ranges of SpreadRanges, the spill file paths of SpreadSpills, the counts),
    and tf.Transform's analyzer accumulators, per bundle like the statistics
    but smaller (min/max, mean/variance, quantile sketches, vocabulary counts
    of low-cardinality columns) and not measured here."""
    from pipeline.layout import ANALYZE_SPLIT
    from transforms.aggregates import group_aggregates
    from transforms.analyze import TRANSFORM_BATCH_ROWS
    from transforms.csv_source import DEFAULT_RANGE_BYTES
    from transforms.spill import SPILL_FILE_ROWS

    components = []
    if not spec.derives_record_key:
        components.append(
            ShuffleComponent(
                "FindDuplicateKeys: (shard, key file) pairs",
                key_shard_bytes(PARSE_BATCH_ROWS),
                "measured: the encoded (shard, path) pairs of one bundle's key file, over "
                f"the rows of one {PARSE_BATCH_ROWS:,}-row batch (a bundle holds at least one)",
            )
        )
    for group in group_aggregates(spec):
        values = len(group.value_columns)
        cell = 16 + 32 * values
        window = 8 + 8 * len(group.aggregates)
        components.append(
            ShuffleComponent(
                f"JoinAggregates[{group.label}]: period statistics and window values",
                cell + window,
                f"derived, one (entity, period) cell per row: period and count (16 bytes) "
                f"and sum, min, max, present of {values} value column(s) ({32 * values}), then "
                f"the window values side input: period and {len(group.aggregates)} value(s) "
                f"({window}); pickling overhead per (entity, block) not counted",
            )
        )
    raw, transformed = statistics_columns(spec)
    # The smallest bundle of the raw statistics' stage: with aggregates the rows
    # come back from JoinAggregates' spill files, without them from a read range.
    if group_aggregates(spec):
        raw_bundle_rows = SPILL_FILE_ROWS
        raw_bundle = f"{SPILL_FILE_ROWS:,}-row spill file of JoinAggregates"
    else:
        raw_bundle_rows = int(DEFAULT_RANGE_BYTES / CSV_BYTES_PER_ROW)
        raw_bundle = f"{DEFAULT_RANGE_BYTES >> 20} MiB read range ({raw_bundle_rows:,} rows)"
    raw_rows = raw_bundle_rows * spec.split.percentages[ANALYZE_SPLIT] // 100
    components.append(
        ShuffleComponent(
            "RawStatistics: per-bundle accumulators",
            statistics_bytes(raw, raw_rows, PARSE_BATCH_ROWS) / raw_bundle_rows,
            f"measured: one accumulator of {len(raw)} columns over the {raw_rows:,} "
            f"{ANALYZE_SPLIT} rows of a {raw_bundle}",
        )
    )
    # Each split spills on its own (transforms.analyze), so a bundle of one spill
    # file feeds one split's accumulator.
    components.append(
        ShuffleComponent(
            "TransformedStatistics: per-bundle accumulators",
            statistics_bytes(transformed, SPILL_FILE_ROWS, TRANSFORM_BATCH_ROWS) / SPILL_FILE_ROWS,
            f"measured: one accumulator of {len(transformed)} features over a "
            f"{SPILL_FILE_ROWS:,}-row spill file of one split",
        )
    )
    return components


@dataclasses.dataclass(frozen=True)
class Estimate:
    rows: int
    vcpu_hours: float
    worker_hours: float
    shuffle_gb: float
    vcpu_usd: float
    memory_usd: float
    disk_usd: float
    shuffle_usd: float

    @property
    def total_usd(self) -> float:
        return self.vcpu_usd + self.memory_usd + self.disk_usd + self.shuffle_usd

    def wall_hours(self, workers: int) -> float:
        """With the work spread perfectly over `workers` from the first second."""
        return self.worker_hours / workers


def estimate(
    rows: int,
    cpu_per_row: float,
    shuffle_bytes_per_row: float,
    machine: MachineType,
    disk_gb: float = DISK_GB,
) -> Estimate:
    """One Dataflow vCPU is taken to do what one core of the measuring machine did."""
    vcpu_hours = cpu_per_row * rows / 3600
    worker_hours = vcpu_hours / machine.vcpus
    shuffle_gb = shuffle_bytes_per_row * rows * SHUFFLE_PASSES / 2**30
    return Estimate(
        rows=rows,
        vcpu_hours=vcpu_hours,
        worker_hours=worker_hours,
        shuffle_gb=shuffle_gb,
        vcpu_usd=vcpu_hours * VCPU_HOUR_USD,
        memory_usd=worker_hours * machine.memory_gb * MEMORY_GB_HOUR_USD,
        disk_usd=worker_hours * disk_gb * PD_GB_HOUR_USD,
        shuffle_usd=shuffle_gb * SHUFFLE_GB_USD,
    )


def _usd(price: float) -> str:
    return "$" + f"{price:.6f}".rstrip("0")


def _duration(hours: float) -> str:
    minutes = hours * 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{hours:.1f} h"


def report(
    results: dict,
    results_path: str,
    variant: str,
    machine: MachineType,
    spec_path: str,
    components: list[ShuffleComponent],
) -> str:
    """The Markdown section: assumptions, then the tables."""
    cpu_per_row, measured_rows, basis = cpu_seconds_per_row(results, variant)
    shuffle_per_row = sum(component.bytes_per_row for component in components)
    certain_per_row = sum(c.bytes_per_row for c in components if c.grows_with_rows)
    # Low: only what grows with the rows whatever the runner does; high: everything.
    estimates = [
        (
            estimate(rows, cpu_per_row, certain_per_row, machine),
            estimate(rows, cpu_per_row, shuffle_per_row, machine),
        )
        for rows in TARGET_ROWS
    ]
    host = results.get("machine", {})
    peak_pss = results["sizes"][str(measured_rows)][variant].get("peak_pss_bytes", 0) / 2**30
    local_processes = min(host.get("cpus") or 1, 4) + 1
    lines = [
        f"### Dataflow cost of the `{variant}` variant ({spec_path}), estimated",
        "",
        f"From `{results_path}` (measured on {host.get('cpus', '?')} cores, "
        f"{host.get('memory_gb', '?')} GB): {cpu_per_row * 1e6:.1f} CPU-s per 1M rows, the "
        f"{basis}. Prices are Dataflow batch **list prices for {PRICES_REGION}** as of "
        f"{PRICES_AS_OF} ({PRICES_SOURCE}): {_usd(VCPU_HOUR_USD)} per vCPU-hour, "
        f"{_usd(MEMORY_GB_HOUR_USD)} per GB-hour of memory, {_usd(PD_GB_HOUR_USD)} per "
        f"GB-hour of standard Persistent Disk, {_usd(SHUFFLE_GB_USD)} per GB of Dataflow "
        "Shuffle data "
        "processed, without any volume discount the page may list. Other regions, "
        "committed-use discounts and FlexRS differ.",
        "",
        "Assumptions:",
        "",
        "- **One Dataflow vCPU does what one core of the measuring machine did (1:1).** "
        "This is an assumption, not a measurement: a Dataflow vCPU is one hyperthread of "
        "the zone's CPU platform, and may do more or less per second than a CPU here.",
        f"- Workers are {machine.name} ({machine.vcpus} vCPUs, {machine.memory_gb:g} GB), "
        f"each with a {DISK_GB} GB boot disk (the batch default with Dataflow Shuffle), "
        "busy 100% of the time they are billed.",
        f"- The shuffle is an estimate, not a measurement: {certain_per_row:.0f} to "
        f"{shuffle_per_row:.0f} bytes per row, counted {SHUFFLE_PASSES}x (once written, once "
        f"read: an assumption, the larger reading of 'data processed'), GB as 2^30 bytes; "
        f"derivation below. The {certain_per_row:.0f} bytes grow "
        "with the rows whatever the runner does; the rest is per bundle or per (entity, "
        "period) cell, taken at its upper bound, and likely far smaller on Dataflow, whose "
        "bundles are larger than the local runner's. Cloud Storage traffic of "
        "the spill files (the rows, and the declared key column, written and read once "
        "as Arrow IPC) is a Cloud Storage charge and not counted.",
        "",
        "Ignored: job start-up and worker VM boot (minutes, each run), the autoscaling "
        "ramp, skew on hot keys or uneven splits (the wall times assume perfect balance), "
        "the per-worker overhead of the SDK harness and of importing TensorFlow in each "
        "of its processes, retries, and any CPU speed difference between the machines.",
        "",
        "| rows | vCPU-hours | worker-hours | shuffle GB | vCPUs $ | memory $ | disk $ "
        "| shuffle $ | total $ |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for low, e in estimates:
        lines.append(
            f"| {e.rows:,} | {e.vcpu_hours:,.1f} | {e.worker_hours:,.1f} "
            f"| {low.shuffle_gb:,.0f}-{e.shuffle_gb:,.0f} "
            f"| {e.vcpu_usd:,.2f} | {e.memory_usd:,.2f} | {e.disk_usd:,.2f} "
            f"| {low.shuffle_usd:,.2f}-{e.shuffle_usd:,.2f} "
            f"| {low.total_usd:,.2f}-{e.total_usd:,.2f} |"
        )
    lines += [
        "",
        "Under these assumptions the cost does not depend on the number of workers; the "
        "wall time does. Start-up is not included: a few minutes per job, which exceeds "
        "the shortest of these times.",
        "",
        "| rows | " + " | ".join(f"{n} workers" for n in WORKER_COUNTS) + " |",
        "| ---: |" + " ---: |" * len(WORKER_COUNTS),
    ]
    for _, e in estimates:
        cells = " | ".join(_duration(e.wall_hours(n)) for n in WORKER_COUNTS)
        lines.append(f"| {e.rows:,} | {cells} |")
    lines += [
        "",
        f"Memory: the {measured_rows:,}-row run peaked at a PSS sum of {peak_pss:.2f} GiB over "
        f"its {local_processes} processes (runner and workers); a worker VM runs one SDK "
        f"process per vCPU, {machine.vcpus} of them in {machine.memory_gb:g} GB.",
        "",
        "Shuffle per input row, from what the graph groups (pipeline/preprocess.py, "
        "transforms/); all but the key column at their upper bound:",
        "",
        "| grouping step | bytes per row | derivation |",
        "| --- | ---: | --- |",
    ]
    for component in components:
        lines.append(f"| {component.name} | {component.bytes_per_row:.1f} | {component.basis} |")
    lines.append(f"| total | {shuffle_per_row:.1f} | |")
    lines += [
        "",
        "Left out: what does not grow with the rows (the CSV byte ranges and spill file "
        "paths spread over the workers, the counts), and tf.Transform's analyzer "
        "accumulators, per bundle like the statistics but smaller (min/max, mean/variance, "
        "quantile sketches, vocabulary counts of low-cardinality columns), not "
        "measured here. Categorical columns whose cardinality the spec leaves open are "
        f"measured with {UNKNOWN_CARDINALITY:,} values per bundle.",
    ]
    return "\n".join(lines)


def spec_paths() -> dict[str, str]:
    """The --spec of every pipeline.preprocess variant of the harness."""
    from benchmarks.run import VARIANTS

    return {
        name: command[command.index("--spec") + 1]
        for name, command in VARIANTS.items()
        if "--spec" in command
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--results", default="benchmarks/results/results.json", help="The harness's results."
    )
    specs = spec_paths()
    parser.add_argument(
        "--variant",
        default="full",
        choices=sorted(specs),
        help="A pipeline.preprocess variant of benchmarks.run.",
    )
    parser.add_argument(
        "--machine_type", default="n1-standard-4", choices=sorted(MACHINE_TYPES), help="Workers."
    )
    args = parser.parse_args(argv)
    from schemas.spec import load_spec

    spec_path = specs[args.variant]
    try:
        results = load_results(args.results)
        components = shuffle_components(load_spec(spec_path))
        print(
            report(
                results,
                args.results,
                args.variant,
                MACHINE_TYPES[args.machine_type],
                spec_path,
                components,
            )
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
