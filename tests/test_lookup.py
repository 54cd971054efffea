"""serving.lookup: which cell each instance reads, at the boundaries of a
period's finality, and what it gets from what the store returned."""

from __future__ import annotations

import pytest

from schemas.spec import Aggregate
from serving import lookup
from serving.lookup import Instance, NotFinal, NotFinalPolicy
from transforms.online_store import encode_value, row_key

LATENESS = 120
COUNT = Aggregate(name="n_1h", key=["zone"], agg="count", window="1h", period="5min", default=0)
MEAN = Aggregate(
    name="fare_3h", key=["zone", "vendor"], agg="mean", value="fare", window="3h",
    period="1h", default=0,
)  # fmt: skip
E = 1_800_000_000  # a whole hour, so a period start of both aggregates


def at(seconds: int, zone: str = "north", vendor: int = 7) -> Instance:
    return Instance({"zone": zone, "vendor": vendor}, seconds)


def single(instance: Instance, now: float, policy=NotFinalPolicy.LATEST_FINAL, aggregates=(COUNT,)):
    (wanted,) = lookup.plan_lookup([instance], list(aggregates), now, LATENESS, policy)
    return wanted


def test_an_event_at_a_period_start_belongs_to_that_period():
    assert lookup.period_start(E, 300) == E
    assert lookup.period_start(E - 1, 300) == E - 300
    assert lookup.period_start(E + 299.5, 300) == E


def test_a_period_is_final_at_its_start_plus_the_lateness_not_a_second_before():
    key = row_key("n_1h", ("north",))
    (cell,) = single(at(E), now=E + LATENESS)
    assert cell == lookup.Wanted(key, E, fallback=False)
    (cell,) = single(at(E + 299), now=E + LATENESS)
    assert cell == lookup.Wanted(key, E, fallback=False)
    # One second earlier: the newest final period is the one before, E - 300.
    (cell,) = single(at(E), now=E + LATENESS - 1)
    assert cell == lookup.Wanted(key, E - 300, fallback=True)
    (cell,) = single(at(E), now=E + LATENESS - 0.5)
    assert cell.period_start == E - 300 and cell.fallback


def test_a_future_event_takes_the_newest_final_period():
    (cell,) = single(at(E + 3 * 3600), now=E + 1000)
    # floor((E + 1000 - 120) / 300) * 300 = E + 600
    assert cell == lookup.Wanted(row_key("n_1h", ("north",)), E + 600, fallback=True)


def test_a_lateness_longer_than_the_period_falls_back_more_than_one_period():
    lateness = 700  # more than two 5-minute periods
    plan = lookup.plan_lookup([at(E + 10)], [COUNT], E + 650, lateness, NotFinalPolicy.LATEST_FINAL)
    # floor((E + 650 - 700) / 300) * 300 = E - 300: periods E and E + 300 are not final.
    assert plan[0][0].period_start == E - 300 and plan[0][0].fallback
    plan = lookup.plan_lookup(
        [at(E - 300)], [COUNT], E + 400, lateness, NotFinalPolicy.LATEST_FINAL
    )
    assert plan[0][0] == lookup.Wanted(row_key("n_1h", ("north",)), E - 300, fallback=False)
    plan = lookup.plan_lookup([at(E)], [COUNT], E + 699, lateness, NotFinalPolicy.LATEST_FINAL)
    assert plan[0][0].period_start == E - 300 and plan[0][0].fallback
    plan = lookup.plan_lookup([at(E)], [COUNT], E + 700, lateness, NotFinalPolicy.LATEST_FINAL)
    assert plan[0][0].period_start == E and not plan[0][0].fallback


def test_reject_names_the_first_instance_and_waits_for_the_last_period():
    instances = [at(E + 10), at(E + 310), at(E + 3600)]
    with pytest.raises(NotFinal) as raised:
        lookup.plan_lookup(instances, [COUNT], E + 330.5, LATENESS, NotFinalPolicy.REJECT)
    # Period E is final (at E + 120); E + 300 is final at E + 420, the future
    # E + 3600 at E + 3720: 3389.5 s away, rounded up.
    assert raised.value.instance_index == 1
    assert raised.value.retry_after_seconds == 3390
    assert str(raised.value) == (
        "instance 1: the value of n_1h for the period starting 2027-01-15T08:05:00Z is not "
        "final before 2027-01-15T08:07:00Z"
    )
    # Once the last period is final the same request is answered.
    plan = lookup.plan_lookup(instances, [COUNT], E + 3720, LATENESS, NotFinalPolicy.REJECT)
    assert [wanted[0].period_start for wanted in plan] == [E, E + 300, E + 3600]


def test_aggregates_of_different_periods_and_keys_read_their_own_cells():
    instance = at(E + 3600 + 400)
    count, mean = single(instance, now=E + 3600 + 530, aggregates=(COUNT, MEAN))
    assert count == lookup.Wanted(row_key("n_1h", ("north",)), E + 3600 + 300, fallback=False)
    assert mean == lookup.Wanted(row_key("fare_3h", ("north", 7)), E + 3600, fallback=False)
    # Early in the 5-minute period: the count falls back, the hourly mean does not.
    count, mean = single(at(E + 3600 + 310), now=E + 3600 + 330, aggregates=(COUNT, MEAN))
    assert count.fallback and count.period_start == E + 3600
    assert not mean.fallback and mean.period_start == E + 3600


def test_reads_are_one_per_period_start_with_every_key_once():
    instances = [at(E + 1), at(E + 2, "south"), at(E + 3), at(E + 3700, "south")]
    plan = lookup.plan_lookup(instances, [COUNT, MEAN], E + 7200, LATENESS, NotFinalPolicy.REJECT)
    assert lookup.reads(plan) == {
        E: sorted(
            [
                row_key("n_1h", ("north",)), row_key("n_1h", ("south",)),
                row_key("fare_3h", ("north", 7)), row_key("fare_3h", ("south", 7)),
            ]
        ),
        E + 3600: sorted([row_key("n_1h", ("south",)), row_key("fare_3h", ("south", 7))]),
    }  # fmt: skip


def test_values_come_from_the_store_else_the_spec_default():
    instances = [at(E + 10), at(E + 20, "never-seen"), at(E + 400)]
    plan = lookup.plan_lookup(
        instances, [COUNT, MEAN], E + 420, LATENESS, NotFinalPolicy.LATEST_FINAL
    )
    cells = {
        E: {
            row_key("n_1h", ("north",)): encode_value(12),
            row_key("fare_3h", ("north", 7)): b"8.5",
        },
        E + 300: {row_key("n_1h", ("north",)): encode_value(99)},  # final at E + 420 exactly
    }
    first, never_seen, later = lookup.resolve(plan, [COUNT, MEAN], cells)
    assert first == {
        "n_1h": lookup.AggregateValue(12, "store", E),
        "fare_3h": lookup.AggregateValue(8.5, "store", E),
    }
    assert never_seen == {
        "n_1h": lookup.AggregateValue(0, "default", E),
        "fare_3h": lookup.AggregateValue(0.0, "default", E),
    }
    assert isinstance(never_seen["fare_3h"].value, float)
    assert later["n_1h"] == lookup.AggregateValue(99, "store", E + 300)


def test_a_fallback_says_so_with_the_period_it_took():
    plan = lookup.plan_lookup([at(E + 10), at(E + 20, "south")], [COUNT], E + 60, LATENESS,
                              NotFinalPolicy.LATEST_FINAL)  # fmt: skip
    cells = {E - 300: {row_key("n_1h", ("north",)): b"5"}}
    north, south = lookup.resolve(plan, [COUNT], cells)
    assert north["n_1h"] == lookup.AggregateValue(5, "latest_final", E - 300)
    assert south["n_1h"] == lookup.AggregateValue(0, "latest_final", E - 300)
    assert north["n_1h"].as_json() == {
        "value": 5,
        "source": "latest_final",
        "period_start": "2027-01-15T07:55:00Z",
    }
