"""pipeline.workarounds: every workaround checks its internals, turns itself off
with one warning where they are missing, patches all or nothing, and leaves
Beam's classes and modules as they were when its run ends.

The whole-job check (a local batch run with every check answering "not
supported" gives the same examples) is in tests/test_preprocess_e2e.py."""

from __future__ import annotations

import logging

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipeline import workarounds
from pipeline.workarounds import guard
from pipeline.workarounds.early_workers import EarlyWorkers
from pipeline.workarounds.guard import Patch, Workaround, applied
from pipeline.workarounds.parallel_worker_close import ParallelWorkerClose
from pipeline.workarounds.reproducible_runs import ReproducibleLocalRuns
from pipeline.workarounds.short_pubsub_pulls import ShortPubsubPulls
from pipeline.workarounds.stage_timing import StageTiming

ALL = [
    ReproducibleLocalRuns(),
    ParallelWorkerClose(),
    EarlyWorkers(1),
    ShortPubsubPulls(),
    StageTiming([], 0.0),
]
_ABSENT = object()


def snapshot() -> dict:
    """What every attribute that any workaround patches is, right now."""
    return {
        (id(patch.owner), patch.name): vars(patch.owner).get(patch.name, _ABSENT)
        for workaround in ALL
        for patch in workaround.patches()
    }


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("workaround", ALL, ids=lambda w: w.name)
def test_the_pinned_beam_has_every_internal_a_workaround_needs(workaround):
    assert workaround.missing_internals() == []


def test_the_flag_accepts_every_workaround_of_a_run():
    names = {w.name for w in ALL} - {StageTiming.name}
    assert set(workarounds.NAMES) == names | {"quick_exit"}


class Owner:
    value = "original"


class Inherits(Owner):
    pass


class TwoPatches(Workaround):
    name = "two_patches"
    summary = "a test"

    def __init__(self, second_owner=Inherits):
        self._second_owner = second_owner

    def missing_internals(self) -> list[str]:
        return []

    def patches(self):
        return [Patch(Owner, "value", "patched"), Patch(self._second_owner, "value", "patched")]


def test_patches_hold_in_the_block_and_are_undone_after_it():
    with applied(TwoPatches()) as in_force:
        assert in_force
        assert Owner.value == Inherits.value == "patched"
        assert "value" in vars(Inherits)
    assert Owner.value == "original"
    # Inherits only inherited it: ours is removed, not replaced by a copy.
    assert "value" not in vars(Inherits)


def test_a_failing_patch_leaves_nothing_half_applied(caplog):
    with caplog.at_level(logging.WARNING), applied(TwoPatches(second_owner=int)) as in_force:
        assert not in_force
        assert Owner.value == "original"
    assert len(warnings_of(caplog)) == 1
    assert "two_patches is off" in warnings_of(caplog)[0]
    assert "patching failed" in warnings_of(caplog)[0]


def test_missing_internals_turn_a_workaround_off_with_one_warning(caplog, monkeypatch):
    monkeypatch.setattr(TwoPatches, "missing_internals", lambda self: ["Owner.moved"])
    with caplog.at_level(logging.WARNING), applied(TwoPatches()) as in_force:
        assert not in_force
        assert Owner.value == "original"
    [warning] = warnings_of(caplog)
    assert "two_patches is off" in warning and "lacks Owner.moved" in warning
    assert "Beam's own behaviour" in warning


def test_a_check_that_raises_turns_the_workaround_off(caplog, monkeypatch):
    def broken(self):
        raise AttributeError("no such thing")

    monkeypatch.setattr(TwoPatches, "missing_internals", broken)
    with caplog.at_level(logging.WARNING), applied(TwoPatches()) as in_force:
        assert not in_force
    [warning] = warnings_of(caplog)
    assert "checking failed: AttributeError: no such thing" in warning


def test_a_disabled_workaround_is_not_applied_and_not_warned_about(caplog):
    with caplog.at_level(logging.WARNING), applied(TwoPatches(), {"two_patches"}) as in_force:
        assert not in_force
        assert Owner.value == "original"
    assert warnings_of(caplog) == []


def test_an_exception_in_the_block_still_restores():
    with pytest.raises(ValueError, match="the run failed"), applied(TwoPatches()):
        raise ValueError("the run failed")
    assert Owner.value == "original"
    assert not guard.in_force("two_patches")


def run_squares() -> None:
    options = PipelineOptions(
        flags=[], runner="FnApiRunner", direct_num_workers=2, direct_running_mode="multi_processing"
    )
    with beam.Pipeline(options=options) as p:
        squares = p | beam.Create(range(20)) | beam.Reshuffle() | beam.Map(lambda x: x * x)
        assert_that(squares, equal_to([x * x for x in range(20)]))


@pytest.mark.slow
def test_two_runs_in_one_process_leave_beam_as_it_was():
    before = snapshot()
    with workarounds.local_batch_run(2, multi_process=True):
        assert guard.in_force(ReproducibleLocalRuns.name)
        assert guard.in_force(EarlyWorkers.name)
        assert snapshot() != before
        run_squares()
    assert snapshot() == before
    # The second run, with every workaround off, runs on Beam's own classes.
    with workarounds.local_batch_run(2, multi_process=True, disabled=workarounds.NAMES):
        assert snapshot() == before
        run_squares()
    assert snapshot() == before
    assert not any(guard.in_force(w.name) for w in ALL)
