"""Independent brute-force check of a run's aggregates against its raw features.

    python -m tests.aggregate_reference OUTPUT_DIR

Reads OUTPUT/manifest.json and every OUTPUT/raw_features/*/*.parquet file, then
recomputes each aggregate listed in the manifest row by row, straight from the
definition (rows of the same key with event time in [e - W, e), where
e = floor(t / P) * P; sum, mean, min and max skip missing values, as SQL does,
and give the default when no value is left), and counts mismatches: counts must
be exact, other values within 1e-6 relative. Exits 1 on any mismatch.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def reference_values(table: pa.Table, timestamp_column: str, aggregate: dict) -> np.ndarray:
    """The aggregate for every row, by scanning the rows of the same key."""
    times = table.column(timestamp_column).to_numpy()
    keys = list(zip(*(table.column(k).to_pylist() for k in aggregate["key"]), strict=True))
    values = (
        # NaN where missing: the validator lets no NaN through as a value.
        pc.cast(table.column(aggregate["value"]), pa.float64()).to_numpy().astype(np.float64)
        if aggregate["value"]
        else None
    )
    rows_by_key: dict[tuple, list[int]] = {}
    for index, key in enumerate(keys):
        rows_by_key.setdefault(key, []).append(index)
    result = np.zeros(len(times), dtype=np.float64)
    period, window = aggregate["period_seconds"], aggregate["window_seconds"]
    for members in rows_by_key.values():
        members = np.array(members)
        member_times = times[members]
        for row in members:
            end = (times[row] // period) * period
            inside = members[(member_times >= end - window) & (member_times < end)]
            if aggregate["agg"] == "count":
                result[row] = len(inside) if len(inside) else aggregate["default"]
                continue
            present = values[inside][~np.isnan(values[inside])]
            if len(present) == 0:
                result[row] = aggregate["default"]
            elif aggregate["agg"] == "sum":
                result[row] = present.sum()
            elif aggregate["agg"] == "mean":
                result[row] = present.mean()
            elif aggregate["agg"] == "min":
                result[row] = present.min()
            else:
                result[row] = present.max()
    return result


def stream_periods_reference(row_periods, n: int, low=None, high=None) -> list[int]:
    """Every period q with a row period p in [q - n, q - 1] (the streaming job's
    trailing windows of n periods that hold a row), within [low, high)."""
    emitted = {q for p in row_periods for q in range(p + 1, p + n + 1)}
    return sorted(q for q in emitted if (low is None or q >= low) and (high is None or q < high))


def stream_values_reference(
    rows: list[dict], timestamp_column: str, group, period_range=(None, None)
):
    """[(entity, (q, {aggregate: value}))] that the streaming job emits for one
    aggregate group (transforms.aggregates.AggregateGroup) over row dicts:
    every period q of `stream_periods_reference` with each aggregate over the
    entity's rows in [qP - W, qP), from the definition (None is missing)."""
    import math

    period = group.period_seconds
    by_entity: dict[tuple, list[dict]] = {}
    for row in rows:
        by_entity.setdefault(tuple(row[k] for k in group.key_columns), []).append(row)
    result = []
    for entity in sorted(by_entity):
        mine = by_entity[entity]
        row_periods = sorted({r[timestamp_column] // period for r in mine})
        for q in stream_periods_reference(row_periods, group.max_window_periods, *period_range):
            values = {}
            for aggregate in group.aggregates:
                since = q * period - aggregate.window_seconds
                inside = [r for r in mine if since <= r[timestamp_column] < q * period]
                agg = aggregate.agg.value
                if agg == "count":
                    values[aggregate.name] = len(inside) or int(aggregate.default)
                    continue
                present = [r[aggregate.value] for r in inside if r[aggregate.value] is not None]
                if not present:
                    values[aggregate.name] = float(aggregate.default)
                elif agg == "sum":
                    values[aggregate.name] = math.fsum(present)
                elif agg == "mean":
                    values[aggregate.name] = math.fsum(present) / len(present)
                else:
                    values[aggregate.name] = float(min(present) if agg == "min" else max(present))
            result.append((entity, (q, values)))
    return result


def mismatches(output_dir: str) -> dict[str, int]:
    with open(os.path.join(output_dir, "manifest.json")) as handle:
        manifest = json.load(handle)
    paths = sorted(glob.glob(os.path.join(output_dir, "raw_features", "*", "*.parquet")))
    if not paths:
        raise SystemExit(f"{output_dir} has no raw_features (run with --write_raw_features)")
    table = pa.concat_tables([pq.read_table(path) for path in paths])
    result = {}
    for aggregate in manifest["aggregates"]:
        expected = reference_values(table, manifest["timestamp_column"], aggregate)
        got = table.column(aggregate["name"]).to_numpy().astype(np.float64)
        if aggregate["agg"] == "count":
            bad = got != expected
        else:
            bad = ~np.isclose(got, expected, rtol=1e-6, atol=0)
        result[aggregate["name"]] = int(bad.sum())
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    counts = mismatches(argv[0])
    for name, count in counts.items():
        print(f"{name}: {count} mismatches")
    return 1 if any(counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
