"""Point-in-time lookup of the spec's windowed aggregates in the online store,
for the prediction service (serving.service).

What the model was trained with. For an instance of entity k at event time t
and an aggregate of period P and window W, let e = floor(t / P) * P: the value
is the aggregate over k's rows with event time in [e - W, e)
(transforms.aggregates). The streaming job writes that value into the online
store once it is final, at e + L (L: the job's --allowed_lateness), as the
cell stamped e of row `row_key(aggregate, k)`; `pipeline.materialize` fills
past periods the same way (transforms.online_store).

What the service answers at wall-clock time `now`, per instance and aggregate:

- the period is final (now >= e + L) and its cell is there: the cell's value,
  source "store", period_start e;
- final, no cell: the window held none of k's rows (the job writes only
  windows with data; an entity the store has never seen is the same case):
  the spec's `default`, as training uses, source "default", period_start e;
- not final yet (now < e + L: a real-time request in the first L seconds of a
  period, while the job may still admit late rows of [e - W, e), or an event
  time in the future). The `--not_final` policy decides:
  - `latest_final` (the default): the value of the newest final period,
    e' = floor((now - L) / P) * P: its cell, else the default; source
    "latest_final", period_start e'. That is the freshest value that cannot
    change any more; it trails the training-time value by (e - e') / P periods.
  - `reject`: `plan_lookup` raises NotFinal, and the service answers 503 with
    Retry-After: the seconds until the last such period of the request is final.

Reads are grouped: `reads(plan)` gives one set of row keys per distinct period
start, which transforms.online_store.read_period_cells reads in one query:
one round trip per request, whatever the number of instances, periods and
aggregates.

Everything here is pure: `now` and the store's cells come in as arguments.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any

from schemas.spec import Aggregate, Kind
from transforms.online_store import decode_value, row_key

SOURCE_STORE = "store"
SOURCE_DEFAULT = "default"
SOURCE_LATEST_FINAL = "latest_final"


class NotFinalPolicy(enum.StrEnum):
    """What an instance whose period is not final yet gets (see the module docstring)."""

    LATEST_FINAL = "latest_final"
    REJECT = "reject"


@dataclasses.dataclass(frozen=True)
class Instance:
    """What the lookup needs of a validated instance: its entity key values
    ({key column: value}, as the validator types them) and event time (seconds)."""

    key_values: Mapping[str, Any]
    event_time: int


@dataclasses.dataclass(frozen=True)
class Wanted:
    """The cell one (instance, aggregate) takes its value from. `fallback`: the
    instance's own period is not final, so this is the newest final one."""

    row_key: bytes
    period_start: int
    fallback: bool


@dataclasses.dataclass(frozen=True)
class AggregateValue:
    """The value given to the model, where it came from, and the period (start
    seconds) whose window [start - W, start) it describes."""

    value: float | int
    source: str
    period_start: int

    def as_json(self) -> dict:
        return {
            "value": self.value,
            "source": self.source,
            "period_start": iso_utc(self.period_start),
        }


class NotFinal(Exception):
    """An instance's period is not final and the policy is `reject`.
    `retry_after_seconds`: until every such period of the request is final."""

    def __init__(self, instance_index: int, aggregate: str, period_start: int, final_at: int,
                 all_final_at: int, now: float):  # fmt: skip
        self.instance_index = instance_index
        self.retry_after_seconds = max(1, math.ceil(all_final_at - now))
        super().__init__(
            f"instance {instance_index}: the value of {aggregate} for the period starting "
            f"{iso_utc(period_start)} is not final before {iso_utc(final_at)}"
        )


def iso_utc(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def period_start(seconds: float, period_seconds: int) -> int:
    """e = floor(t / P) * P, for a whole or fractional t."""
    return int(seconds // period_seconds) * period_seconds


def newest_final_period_start(now: float, period_seconds: int, lateness_seconds: int) -> int:
    """e' = floor((now - L) / P) * P: the newest period with e' + L <= now."""
    return period_start(now - lateness_seconds, period_seconds)


def default_value(aggregate: Aggregate) -> float | int:
    """The spec's default in the aggregate's kind (a mean's `default: 0` is 0.0)."""
    return int(aggregate.default) if aggregate.kind is Kind.INT else float(aggregate.default)


def instances_of(valid, aggregates: Sequence[Aggregate], timestamp_column: str) -> list[Instance]:
    """The Instances of validated rows (a pyarrow RecordBatch)."""
    key_columns = sorted({name for aggregate in aggregates for name in aggregate.key})
    keys = {name: valid.column(name).to_pylist() for name in key_columns}
    times = valid.column(timestamp_column).to_pylist()
    return [
        Instance({name: values[row] for name, values in keys.items()}, event_time)
        for row, event_time in enumerate(times)
    ]


def plan_lookup(
    instances: Sequence[Instance],
    aggregates: Sequence[Aggregate],
    now: float,
    lateness_seconds: int,
    policy: NotFinalPolicy,
) -> list[list[Wanted]]:
    """Per instance, per aggregate (in `aggregates` order): the cell to read.
    Raises NotFinal (naming the first such instance) under the `reject` policy."""
    plan = []
    not_final: list[tuple[int, str, int, int]] = []
    for index, instance in enumerate(instances):
        wanted = []
        for aggregate in aggregates:
            key = row_key(
                aggregate.name, tuple(instance.key_values[name] for name in aggregate.key)
            )
            start = period_start(instance.event_time, aggregate.period_seconds)
            if now >= start + lateness_seconds:
                wanted.append(Wanted(key, start, fallback=False))
            elif policy is NotFinalPolicy.REJECT:
                not_final.append((index, aggregate.name, start, start + lateness_seconds))
            else:
                newest = newest_final_period_start(now, aggregate.period_seconds, lateness_seconds)
                wanted.append(Wanted(key, newest, fallback=True))
        plan.append(wanted)
    if not_final:
        all_final_at = max(final_at for *_, final_at in not_final)
        raise NotFinal(*not_final[0], all_final_at, now)
    return plan


def reads(plan: Sequence[Sequence[Wanted]]) -> dict[int, list[bytes]]:
    """{period start: its distinct row keys, sorted}: one store read each."""
    keys: dict[int, set[bytes]] = {}
    for wanted in plan:
        for cell in wanted:
            keys.setdefault(cell.period_start, set()).add(cell.row_key)
    return {start: sorted(keys[start]) for start in sorted(keys)}


def resolve(
    plan: Sequence[Sequence[Wanted]],
    aggregates: Sequence[Aggregate],
    cells: Mapping[int, Mapping[bytes, bytes]],
) -> list[dict[str, AggregateValue]]:
    """Per instance, {aggregate name: AggregateValue} from what the store returned
    for each period start ({period start: {row key: value bytes}})."""
    resolved = []
    for wanted in plan:
        values = {}
        for aggregate, cell in zip(aggregates, wanted, strict=True):
            data = cells.get(cell.period_start, {}).get(cell.row_key)
            value = decode_value(data, aggregate) if data is not None else default_value(aggregate)
            if cell.fallback:
                source = SOURCE_LATEST_FINAL
            else:
                source = SOURCE_STORE if data is not None else SOURCE_DEFAULT
            values[aggregate.name] = AggregateValue(value, source, cell.period_start)
        resolved.append(values)
    return resolved
