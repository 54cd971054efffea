"""JSON instances for trainer.predict, from a run's validated raw rows.

    python -m trainer.instances --data_dir OUT [--split eval] [--limit 5] > instances.jsonl

Reads OUT/raw_features/<split>/*.parquet (a run made with --write_raw_features)
and prints one JSON object of raw columns per line, as a client would send them:
the label and a derived record key left out, the timestamp (if the spec has
one) as 'YYYY-MM-DD HH:MM:SS UTC' text, and a missing optional value as null.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import sys

from pipeline.layout import RunLayout


def raw_instances(data_dir: str, split: str, limit: int) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(RunLayout(data_dir).manifest_path) as handle:
        manifest = json.load(handle)
    paths = sorted(glob.glob(RunLayout(data_dir).raw_features_pattern(split)))
    if not paths:
        raise FileNotFoundError(f"{data_dir}/raw_features/{split} has no Parquet files")
    table = pa.concat_tables([pq.read_table(path) for path in paths]).slice(0, limit)
    timestamp_column = manifest.get("timestamp_column")
    instances = []
    for row in table.to_pylist():
        row.pop(manifest["label"])
        if manifest.get("record_key") == "derived":
            row.pop(manifest["key_column"], None)
        if timestamp_column is not None:
            moment = dt.datetime.fromtimestamp(row[timestamp_column], dt.UTC)
            row[timestamp_column] = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
        instances.append(row)
    return instances


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="A run made with --write_raw_features.")
    parser.add_argument("--split", default="eval", help="Split to take rows from.")
    parser.add_argument("--limit", type=int, default=5, help="Number of instances.")
    args = parser.parse_args(argv)
    try:
        instances = raw_instances(args.data_dir, args.split, args.limit)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for instance in instances:
        print(json.dumps(instance))
    return 0


if __name__ == "__main__":
    sys.exit(main())
