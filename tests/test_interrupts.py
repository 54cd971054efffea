"""Stopped and killed runs: nothing that looks complete is left behind.

A run is started as its own process group, as a shell or a container runtime
would, and is stopped with SIGINT or SIGTERM (it must exit 130 having removed
its staging directory) or killed with SIGKILL at several points (the output
must then be refused by the trainer unless the run had already committed, and a
rerun with --overwrite must replace it cleanly).
"""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from pipeline.sample_data import generate_rows, write_csv
from tests.processes import stop_process_group
from tests.support import ROOT, TAXI_SPEC, poll, wait_for

pytestmark = pytest.mark.slow

ROWS = 20_000


@pytest.fixture(scope="module")
def trips(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("interrupts") / "trips.csv")
    write_csv(generate_rows(ROWS, seed=21, messy_fraction=0.01), path)
    return path


def start_run(trips: str, output_dir: str, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "pipeline.preprocess", "--spec", str(TAXI_SPEC), "--input", trips,
        "--output_dir", output_dir, "--runner", "FnApiRunner", *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )  # fmt: skip


def wait_for_line(process: subprocess.Popen, phrase: str, timeout: float = 120) -> list[str]:
    """Reads the run's output until a line holds `phrase`; returns the lines read."""
    deadline, lines = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if phrase in line:
            return lines
    raise AssertionError(f"no line with {phrase!r} in:\n{''.join(lines[-20:])}")


def group_alive(process: subprocess.Popen) -> bool:
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def trainer_refuses(output_dir: str) -> bool:
    from trainer.model import DataDirError, load_run

    try:
        load_run(output_dir)
    except DataDirError:
        return True
    return False


def staged_files(output_dir: str) -> list[str]:
    pattern = os.path.join(output_dir, "_staging", "**", "*")
    return [path for path in glob.glob(pattern, recursive=True) if os.path.isfile(path)]


def assert_complete_and_unmixed(output_dir: str, staging_allowed: bool = False) -> str:
    """A complete run: its manifest lists exactly the shards on disk (outside the
    staging area, which a killed later run may have left). Returns its run id."""
    with open(os.path.join(output_dir, "manifest.json")) as handle:
        manifest = json.load(handle)
    listed = sorted(path for split in manifest["splits"].values() for path in split["shards"])
    on_disk = sorted(glob.glob(os.path.join(output_dir, "*", "*.tfrecord.gz")))
    assert listed == on_disk
    assert manifest["counts"]["read"] == ROWS
    assert not os.path.exists(os.path.join(output_dir, "tft_tmp"))
    if not staging_allowed:
        assert not os.path.exists(os.path.join(output_dir, "_staging"))
    return manifest["run_id"]


def finish(process: subprocess.Popen, timeout: float) -> tuple[str, bool]:
    """Waits for a stopped or failing run; returns its output and whether any
    process of its group (a worker) was still alive 30 s after it exited."""
    output, _ = process.communicate(timeout=timeout)
    group_gone = poll(lambda: not group_alive(process), timeout=30, interval=0.5)
    return output, not group_gone


def assert_nothing_left(output: str, output_dir: str, workers_outlived_the_run: bool) -> None:
    assert "nothing was committed" in output
    assert not os.path.exists(os.path.join(output_dir, "manifest.json"))
    # Only the run's log file stays (OUTPUT/_logs/, see pipeline/logs.py).
    left = os.listdir(output_dir) if os.path.exists(output_dir) else []
    assert left in ([], ["_logs"])
    if left:
        assert all(name.endswith(".log") for name in os.listdir(os.path.join(output_dir, "_logs")))
    assert not workers_outlived_the_run


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_exits_130_and_leaves_nothing(trips, tmp_path, signum):
    output_dir = str(tmp_path / "out")
    process = start_run(trips, output_dir)
    try:
        # Into the pipeline: workers started, files being written.
        wait_for_line(process, "read and validate started")
        wait_for(lambda: staged_files(output_dir), timeout=60, message="files in the staging area")
        process.send_signal(signum)
        output, workers_outlived_the_run = finish(process, timeout=120)
    finally:
        stop_process_group(process, grace_seconds=5)
    assert process.returncode == 130, output[-3000:]
    assert_nothing_left(output, output_dir, workers_outlived_the_run)


def worker_pids(process: subprocess.Popen) -> list[int]:
    """The SDK worker processes that the run started."""
    from pipeline.children import descendants, is_sdk_worker

    return [pid for pid in descendants(process.pid) if is_sdk_worker(pid)]


def test_a_killed_worker_process_fails_the_run_cleanly(trips, tmp_path):
    output_dir = str(tmp_path / "out")
    process = start_run(trips, output_dir)  # the default: two worker processes
    try:
        wait_for_line(process, "read and validate started")
        workers = worker_pids(process)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        output, workers_outlived_the_run = finish(process, timeout=300)
    finally:
        stop_process_group(process, grace_seconds=5)
    assert process.returncode == 1, output[-3000:]
    assert f"worker process {workers[0]}" in output, output[-3000:]
    assert_nothing_left(output, output_dir, workers_outlived_the_run)


def test_sigkill_at_any_point_leaves_no_complete_looking_output(trips, tmp_path):
    rng = random.Random(8)
    output_dir = str(tmp_path / "out")
    # A first complete run, so that kills also land on a directory being overwritten.
    first = start_run(trips, output_dir)
    output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output[-3000:]
    first_run_id = assert_complete_and_unmixed(output_dir)

    for delay in sorted(rng.uniform(0, 25) for _ in range(3)):
        process = start_run(trips, output_dir, "--overwrite", "--num_shards", "3")
        try:
            wait_for_line(process, "phase: running the pipeline")
            # The delay is what the test varies (a kill at an arbitrary moment),
            # not a wait for something to happen.
            time.sleep(delay)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            stop_process_group(process, grace_seconds=5)
        if os.path.exists(os.path.join(output_dir, "manifest.json")):
            # Killed before its commit began, the run left the old run intact;
            # killed after writing its manifest, it is complete itself.
            assert_complete_and_unmixed(output_dir, staging_allowed=True)
            assert not trainer_refuses(output_dir)
        else:
            # Killed during its commit: nothing may look complete.
            assert trainer_refuses(output_dir), f"killed {delay:.1f} s into the pipeline"

    rerun = start_run(trips, output_dir, "--overwrite", "--num_shards", "2")
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-3000:]
    assert assert_complete_and_unmixed(output_dir) != first_run_id
    with open(os.path.join(output_dir, "manifest.json")) as handle:
        manifest = json.load(handle)
    assert all(len(split["shards"]) == 2 for split in manifest["splits"].values())
    assert not trainer_refuses(output_dir)
