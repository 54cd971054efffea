"""Times every bundle the FnApiRunner executes: a profiling hook for
benchmarks/stage_times.py, not part of any run.

Beam has no public per-stage timing for its local runner, so this wraps the
private `FnApiRunner._execute_bundle`. Like the workarounds beside it, it goes
through pipeline.workarounds.guard: on a Beam release where that method moved,
it logs one warning and records nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pipeline.workarounds.guard import Patch, Workaround, missing_attributes, missing_parameters

# (stage name, start in seconds since `started`, duration in seconds)
StageRecord = tuple[str, float, float]


def _timed(original, records: list[StageRecord], started: float):
    def execute_bundle(self, runner_execution_context, bundle_context_manager, bundle_input):
        start = time.monotonic()
        try:
            return original(self, runner_execution_context, bundle_context_manager, bundle_input)
        finally:
            name = bundle_context_manager.stage.name
            records.append((name, start - started, time.monotonic() - start))

    return execute_bundle


class StageTiming(Workaround):
    """Appends a StageRecord to `records` for every bundle run in the block."""

    name = "stage_timing"
    summary = "benchmarks.stage_times times each stage of a local run"

    def __init__(self, records: list[StageRecord], started: float):
        self._records = records
        self._started = started

    def missing_internals(self) -> list[str]:
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        missing = missing_attributes(fn_runner.FnApiRunner, ["_execute_bundle"])
        return missing or missing_parameters(
            fn_runner.FnApiRunner._execute_bundle,
            ["self", "runner_execution_context", "bundle_context_manager", "bundle_input"],
            "FnApiRunner._execute_bundle",
        )

    def patches(self) -> Sequence[Patch]:
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        runner = fn_runner.FnApiRunner
        timed = _timed(runner._execute_bundle, self._records, self._started)
        return [Patch(runner, "_execute_bundle", timed)]
