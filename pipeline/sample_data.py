"""Deterministic synthetic NYC-taxi-like trips, in the layout of schemas/taxi.yaml.

    python -m pipeline.sample_data --rows 50000 --output data/taxi.csv [--seed 7]

The same --rows and --seed always give the same bytes. The data has what the
reference use case needs to be a fair test: pickups clustered around Manhattan
and the airports, a year of timestamps with daily and weekly seasonality, fares
that depend on distance, time of day and zone (with airport flat fares), and a
small share of messy rows of the kinds real exports contain. Output ending in
.gz is gzip-compressed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import io
import logging
import os
import sys
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Zone:
    name: str
    latitude: float
    longitude: float
    spread_degrees: float
    pickup_weight: float
    is_airport: bool = False


ZONES = (
    Zone("Midtown", 40.7549, -73.9840, 0.010, 0.24),
    Zone("Upper East Side", 40.7736, -73.9566, 0.010, 0.14),
    Zone("Upper West Side", 40.7870, -73.9754, 0.010, 0.11),
    Zone("Chelsea", 40.7465, -74.0014, 0.008, 0.10),
    Zone("Financial District", 40.7075, -74.0113, 0.006, 0.08),
    Zone("Greenwich Village", 40.7336, -74.0027, 0.006, 0.08),
    Zone("Harlem", 40.8116, -73.9465, 0.010, 0.04),
    Zone("Williamsburg", 40.7081, -73.9571, 0.010, 0.04),
    Zone("Long Island City", 40.7447, -73.9485, 0.008, 0.03),
    Zone("JFK Airport", 40.6413, -73.7781, 0.006, 0.08, True),
    Zone("LaGuardia Airport", 40.7769, -73.8740, 0.005, 0.05, True),
    Zone("Newark Airport", 40.6895, -74.1745, 0.006, 0.01, True),
)

PAYMENT_TYPES = ("CARD", "CASH", "NO_CHARGE", "DISPUTE")
PAYMENT_WEIGHTS = (0.70, 0.28, 0.01, 0.01)
VENDORS = ("CMT", "VTS", "DDS")
HEADER = (
    "trip_id",
    "pickup_datetime",
    "pickup_longitude",
    "pickup_latitude",
    "dropoff_longitude",
    "dropoff_latitude",
    "passenger_count",
    "pickup_zone",
    "payment_type",
    "vendor_id",
    "fare_amount",
)

# Relative demand by local hour of day (0..23) and by weekday (Monday = 0).
_HOURLY_DEMAND = np.array(
    [
        0.55,
        0.40,
        0.30,
        0.20,
        0.15,
        0.20,
        0.40,
        0.70,
        0.90,
        0.90,
        0.80,
        0.80,
        0.85,
        0.85,
        0.85,
        0.85,
        0.90,
        0.95,
        1.00,
        1.00,
        0.95,
        0.90,
        0.80,
        0.70,
    ]
)
_WEEKDAY_DEMAND = np.array([0.85, 0.90, 0.95, 1.00, 1.00, 0.95, 0.80])
_YEAR_START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
# New York is UTC-5 in winter and UTC-4 in summer; seasonality follows local time.
_NEW_YORK_OFFSET_HOURS = -5

MESSY_KINDS = (
    "missing_fare",
    "negative_fare",
    "zero_coordinates",
    "bad_timestamp",
    "too_few_columns",
    "not_a_number",
    "unknown_payment_type",
)


def _sample_timestamps(rng: np.random.Generator, count: int) -> np.ndarray:
    """Seconds since the epoch over one year, thinned by hourly and weekly demand."""
    accepted: list[np.ndarray] = []
    needed = count
    year_seconds = 365 * 86400
    start = int(_YEAR_START.timestamp())
    while needed > 0:
        candidates = start + rng.integers(0, year_seconds, size=needed * 2)
        local = candidates + _NEW_YORK_OFFSET_HOURS * 3600
        hour = (local // 3600) % 24
        weekday = ((local // 86400) + 3) % 7  # 1970-01-01 was a Thursday
        keep = rng.random(candidates.size) < _HOURLY_DEMAND[hour] * _WEEKDAY_DEMAND[weekday]
        accepted.append(candidates[keep][:needed])
        needed -= accepted[-1].size
    return np.concatenate(accepted)


def _fares(rng, pickup_zone, dropoff_zone, miles, timestamps) -> np.ndarray:
    local = timestamps + _NEW_YORK_OFFSET_HOURS * 3600
    hour = (local // 3600) % 24
    weekday = ((local // 86400) + 3) % 7
    rush = (weekday < 5) & (hour >= 16) & (hour < 20)
    night = (hour >= 20) | (hour < 6)
    minutes = miles * rng.uniform(3.0, 6.0, size=miles.size) * np.where(rush, 1.4, 1.0)
    fare = 3.0 + 2.5 * miles + 0.5 * minutes + np.where(rush, 2.5, 0.0) + np.where(night, 1.0, 0.0)
    names = np.array([zone.name for zone in ZONES])
    jfk_manhattan = (
        (names[pickup_zone] == "JFK Airport") ^ (names[dropoff_zone] == "JFK Airport")
    ) & (miles > 8)
    fare = np.where(jfk_manhattan, 70.0 + np.where(rush, 5.0, 0.0), fare)
    fare = fare * rng.lognormal(0.0, 0.05, size=fare.size)
    return np.round(np.clip(fare, 3.0, 450.0), 2)


def generate_rows(rows: int, seed: int, messy_fraction: float = 0.005) -> list[list[str]]:
    """Returns `rows` CSV records (without the header) as lists of field strings."""
    rng = np.random.default_rng(seed)
    weights = np.array([zone.pickup_weight for zone in ZONES])
    pickup_zone = rng.choice(len(ZONES), size=rows, p=weights / weights.sum())
    # Airport pickups mostly go to Manhattan; other trips mostly stay nearby.
    is_airport = np.array([zone.is_airport for zone in ZONES])
    dropoff_weights = np.where(is_airport, 0.05, 1.0) * weights
    dropoff_zone = rng.choice(len(ZONES), size=rows, p=dropoff_weights / dropoff_weights.sum())
    local_trip = rng.random(rows) < 0.35
    dropoff_zone = np.where(local_trip & ~is_airport[pickup_zone], pickup_zone, dropoff_zone)

    def place(zone_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lat = np.array([z.latitude for z in ZONES])[zone_index]
        lon = np.array([z.longitude for z in ZONES])[zone_index]
        spread = np.array([z.spread_degrees for z in ZONES])[zone_index]
        return lat + rng.normal(0, 1, rows) * spread, lon + rng.normal(0, 1, rows) * spread * 1.3

    pickup_lat, pickup_lon = place(pickup_zone)
    dropoff_lat, dropoff_lon = place(dropoff_zone)
    # Manhattan-ish street distance in miles: 69 miles per degree latitude, 52.5 per
    # degree longitude at this latitude, times a route factor.
    miles = 1.25 * np.hypot((dropoff_lat - pickup_lat) * 69.0, (dropoff_lon - pickup_lon) * 52.5)
    miles = np.maximum(miles, 0.1)
    timestamps = _sample_timestamps(rng, rows)
    fares = _fares(rng, pickup_zone, dropoff_zone, miles, timestamps)
    passengers = rng.choice([1, 2, 3, 4, 5, 6], size=rows, p=[0.70, 0.14, 0.05, 0.03, 0.05, 0.03])
    passengers_missing = rng.random(rows) < 0.02
    payment = rng.choice(len(PAYMENT_TYPES), size=rows, p=PAYMENT_WEIGHTS)
    vendor = rng.choice(len(VENDORS), size=rows)
    vendor_missing = rng.random(rows) < 0.10
    messy = rng.random(rows) < messy_fraction
    messy_kind = rng.integers(0, len(MESSY_KINDS), size=rows)

    records = []
    for i in range(rows):
        when = dt.datetime.fromtimestamp(int(timestamps[i]), dt.UTC)
        record = [
            f"{seed:04d}-{i:09d}",
            when.strftime("%Y-%m-%d %H:%M:%S UTC"),
            f"{pickup_lon[i]:.6f}",
            f"{pickup_lat[i]:.6f}",
            f"{dropoff_lon[i]:.6f}",
            f"{dropoff_lat[i]:.6f}",
            "" if passengers_missing[i] else str(passengers[i]),
            ZONES[pickup_zone[i]].name,
            PAYMENT_TYPES[payment[i]],
            "" if vendor_missing[i] else VENDORS[vendor[i]],
            f"{fares[i]:.2f}",
        ]
        if messy[i]:
            record = _make_messy(record, MESSY_KINDS[messy_kind[i]])
        records.append(record)
    return records


def _make_messy(record: list[str], kind: str) -> list[str]:
    """Damages one record the way real taxi exports are damaged."""
    record = list(record)
    if kind == "missing_fare":
        record[10] = ""
    elif kind == "negative_fare":
        record[10] = f"-{record[10]}"
    elif kind == "zero_coordinates":
        record[2:6] = ["0", "0", "0", "0"]
    elif kind == "bad_timestamp":
        record[1] = "not-a-time"
    elif kind == "too_few_columns":
        record = record[:7]
    elif kind == "not_a_number":
        record[3] = "forty"
    elif kind == "unknown_payment_type":
        record[8] = "Cash"
    return record


def write_csv(records: list[list[str]], output: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(records)
    payload = buffer.getvalue().encode("utf-8")
    directory = os.path.dirname(output)
    if directory:
        os.makedirs(directory, exist_ok=True)
    if output.endswith(".gz"):
        # mtime=0 keeps the gzip bytes identical between runs.
        payload = gzip.compress(payload, mtime=0)
    with open(output, "wb") as handle:
        handle.write(payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True, help="Number of data rows to write.")
    parser.add_argument("--output", required=True, help="CSV file to write; .gz compresses.")
    parser.add_argument("--seed", type=int, default=7, help="Random seed; same seed, same file.")
    parser.add_argument(
        "--messy_fraction",
        type=float,
        default=0.005,
        help="Share of rows damaged like real exports (missing or negative fares, ...).",
    )
    args = parser.parse_args(argv)
    if args.rows < 0 or not 0 <= args.messy_fraction <= 1:
        parser.error("--rows must be >= 0 and --messy_fraction within [0, 1]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_csv(generate_rows(args.rows, args.seed, args.messy_fraction), args.output)
    logging.info("wrote %d trips to %s", args.rows, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
