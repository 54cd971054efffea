"""A process started early to become an SDK worker of the local batch runner
(see pipeline.workarounds.early_workers, which starts it).

    python -m pipeline.workarounds.waiting_worker REPORT_FD MODULE...

It imports MODULE... at a lower CPU priority, writes its environment to the
pipe REPORT_FD, then waits for one line on stdin: the environment Beam gives a
new worker, as JSON, with which it runs Beam's worker main; or an empty line,
when the run ended without needing it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence

from pipeline.workarounds.early_workers import IMPORT_NICENESS
from pipeline.workarounds.quick_exit import NAME as QUICK_EXIT


def _wait_for_environment(report_fd: int, imports: Sequence[str]) -> dict | None:
    try:
        with _lower_priority(IMPORT_NICENESS):
            for module in imports:
                importlib.import_module(module)
        with os.fdopen(report_fd, "wb") as report:
            report.write(json.dumps(dict(os.environ)).encode())
        line = sys.stdin.buffer.readline()
    except KeyboardInterrupt:
        # Stopped with its run before it was needed (Ctrl-C reaches the whole
        # process group): no traceback.
        sys.exit(128 + signal.SIGINT)
    except BrokenPipeError:
        return None  # the run is gone
    # An empty line: the run ended without needing this process.
    return json.loads(line) if line else None


@contextlib.contextmanager
def _lower_priority(increment: int) -> Iterator[None]:
    """Runs the block at a lower CPU priority, then restores it where allowed
    (raising a priority back needs privileges; without them the worker stays
    at the lower one, as does its sibling, and only the runner is ahead)."""
    original = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, min(original + increment, 19))
    try:
        yield
    finally:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, original)


def quick_exit_enabled(environment: dict) -> bool:
    """Whether the run's options leave quick_exit on, as they do unless
    --disable_workaround quick_exit. Beam hands a worker its options as JSON in
    PIPELINE_OPTIONS, in a layout of its own; only that flag takes the value
    "quick_exit", so finding the quoted name is enough."""
    return f'"{QUICK_EXIT}"' not in environment.get("PIPELINE_OPTIONS", "")


def main(argv: Sequence[str]) -> tuple[int, bool]:
    """Returns the exit code, and whether the process may end at once."""
    environment = _wait_for_environment(int(argv[0]), argv[1:])
    if environment is None:
        return 0, True
    os.environ.clear()
    os.environ.update(environment)
    from apache_beam.runners.worker import sdk_worker_main

    # As `python -m apache_beam.runners.worker.sdk_worker_main` would have it:
    # options parsed from sys.argv inside the worker must not see ours.
    sys.argv = [sdk_worker_main.__file__]
    sdk_worker_main.main(sys.argv)
    return 0, quick_exit_enabled(environment)


if __name__ == "__main__":
    # Once Beam's harness returns, nothing is left to do but the teardown, which
    # the runner would wait for (see pipeline.workarounds.quick_exit). A failing worker
    # raises out of main and exits through the interpreter, with its traceback.
    from pipeline.workarounds.quick_exit import exit_now

    code, quickly = main(sys.argv[1:])
    exit_now(code, enabled=quickly)
