"""Workarounds of Beam's local runners: the only code that touches Beam's
private internals.

Beam's local runners (FnApiRunner for batch, the Python DirectRunner for
streaming) are built for tests; a few of their behaviours cost a laptop run
correctness or minutes. Each module here works around one of them:

- reproducible_runs: the FnApiRunner hands stage outputs to its workers in
  arrival order; this orders them by content, so that local reruns agree bit
  for bit (correctness).
- short_pubsub_pulls: the DirectRunner pulls Pub/Sub for up to 30 s per
  bundle; this pulls for 2 s, so that a local window closes in seconds.
- parallel_worker_close: the FnApiRunner closes its worker processes one by
  one and waits for each without a bound; this closes them together and gives
  up after 30 s, so that a stopped run cannot hang (robustness; its speed gain
  is within the noise).
- early_workers: the FnApiRunner starts its workers once the job is built;
  this starts them at once, so their imports overlap (speed).
- quick_exit: Python unloads TensorFlow's modules at exit; this ends a
  finished process with os._exit (speed).
- stage_timing: Beam has no public per-stage timing of a local run; this times
  each stage for benchmarks/stage_times.py (profiling only).

Every one goes through `guard.applied`: it checks that the internals it relies
on are there; where they are not (another Beam release) it logs one warning
line and the run goes on with Beam's own behaviour. It patches for one run
only and restores Beam's classes and modules when the run ends. The speed
workarounds earn their place with a measured gain (benchmarks/README, "Runner
workarounds, with and without"); `--disable_workaround NAME` turns one off for
a run, which is how that was measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator

from pipeline.workarounds import quick_exit
from pipeline.workarounds.early_workers import EarlyWorkers
from pipeline.workarounds.guard import applied
from pipeline.workarounds.parallel_worker_close import ParallelWorkerClose
from pipeline.workarounds.reproducible_runs import ReproducibleLocalRuns
from pipeline.workarounds.short_pubsub_pulls import ShortPubsubPulls

# What --disable_workaround accepts.
NAMES = (
    ReproducibleLocalRuns.name,
    ParallelWorkerClose.name,
    EarlyWorkers.name,
    ShortPubsubPulls.name,
    quick_exit.NAME,
)


@contextlib.contextmanager
def local_batch_run(
    num_workers: int, multi_process: bool, disabled: Collection[str] = ()
) -> Iterator[None]:
    """Around building and running one batch pipeline on FnApiRunner."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(applied(ReproducibleLocalRuns(), disabled))
        stack.enter_context(applied(ParallelWorkerClose(), disabled))
        if multi_process:
            stack.enter_context(applied(EarlyWorkers(num_workers), disabled))
        yield


@contextlib.contextmanager
def local_streaming_run(disabled: Collection[str] = ()) -> Iterator[None]:
    """Around running one streaming pipeline on the Python DirectRunner."""
    with applied(ShortPubsubPulls(), disabled):
        yield
