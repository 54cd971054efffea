"""The console and the run log: what a person sees, and where the rest goes."""

from __future__ import annotations

import io
import logging
import os
import pathlib
import subprocess
import sys

import pytest

from pipeline import commit, logs
from pipeline.logs import ConsoleHandler, run_log, run_log_path
from pipeline.options import console_level
from tests.support import ROOT, TAXI_SPEC


def record(message: str, level: int = logging.INFO, name: str = "x", exc_info=None):
    return logging.LogRecord(name, level, __file__, 1, message, (), exc_info)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def console(level=logging.WARNING, terminal=False, clock=None):
    stream = io.StringIO()
    handler = ConsoleHandler(level, stream=stream, terminal=terminal, clock=clock or Clock())
    return handler, stream


def forwarded(message: str, severity: str = "INFO") -> str:
    # As Beam's local runner logs a record that a worker process forwarded.
    return (
        f'Worker: severity: {severity} timestamp {{   seconds: 1 }} message: "{message}" '
        'log_location: "/beam/sdk_worker_main.py:1" thread: "MainThread"'
    )


def test_the_console_shows_phases_and_warnings_and_hides_info_chatter():
    handler, stream = console()
    handler.handle(record("phase: running the pipeline on FnApiRunner"))
    handler.handle(record("Feature x has a shape . Setting to DenseTensor.", name="absl"))
    handler.handle(record(forwarded("Python sdk harness exiting.")))
    handler.handle(record("disk almost full", logging.WARNING, name="apache_beam.io"))
    assert stream.getvalue().splitlines() == [
        "phase: running the pipeline on FnApiRunner",
        "warning: disk almost full",
    ]


def test_log_level_info_brings_the_chatter_back():
    handler, stream = console(level=logging.INFO)
    handler.handle(record("Feature x has a shape . Setting to DenseTensor.", name="absl"))
    handler.handle(record(forwarded("Python sdk harness exiting.")))
    handler.handle(record("a debug note", logging.DEBUG))
    assert stream.getvalue() == (
        "info: Feature x has a shape . Setting to DenseTensor.\n"
        "info: worker: Python sdk harness exiting.\n"
    )


def test_a_forwarded_worker_warning_is_one_line_and_known_noise_is_dropped():
    handler, stream = console()
    handler.handle(record(forwarded('bad \\"row\\" caf\\303\\251', "WARN"), logging.WARNING))
    noise = "No semi_persistent_directory found:  User registered objects may not be effective"
    handler.handle(record(forwarded(noise, "WARN"), logging.WARNING))
    assert stream.getvalue() == 'warning: worker: bad "row" café\n'


def progress_line(phase: str, rows: int, seconds: int, worker: int) -> str:
    rate = rows // seconds
    return f"progress: {phase} {rows:,} rows in {seconds} s ({rate:,} rows/s) [worker {worker}]"


def test_off_a_terminal_progress_is_a_start_line_per_phase_and_counts_every_interval():
    clock = Clock()
    handler, stream = console(clock=clock)
    for worker in (1, 2):
        handler.handle(record(f"progress: read and validate started [worker {worker}]"))
    clock.now = 10.0
    handler.handle(record(progress_line("read and validate", 1000, 10, 1)))
    clock.now = 12.0
    handler.handle(record(progress_line("read and validate", 3000, 10, 2)))  # not due yet
    clock.now = 20.0
    handler.handle(record(progress_line("read and validate", 2000, 20, 1)))
    assert stream.getvalue().splitlines() == [
        "progress: read and validate started",
        "progress: read and validate 1,000 rows (100 rows/s), 10 s elapsed",
        # Both workers' latest counts, added up, and their rates.
        "progress: read and validate 5,000 rows (400 rows/s), 20 s elapsed",
    ]
    assert "\r" not in stream.getvalue()


def test_on_a_terminal_the_progress_line_is_redrawn_in_place():
    clock = Clock()
    handler, stream = console(terminal=True, clock=clock)
    handler.handle(record("progress: read and validate started [worker 1]"))
    clock.now = 3.0
    handler.handle(record(progress_line("read and validate", 1000, 2, 1)))
    handler.handle(record("a warning", logging.WARNING))
    clock.now = 5.0
    handler.handle(record("progress: transform and encode started [worker 1]"))
    handler.handle(record("phase: reconciling counts"))
    assert stream.getvalue() == (
        "\rprogress: read and validate started, 0 s elapsed\x1b[K"
        "\rprogress: read and validate 1,000 rows (500 rows/s), 3 s elapsed\x1b[K"
        # A record clears the line, takes its place, and the line comes back below it.
        "\r\x1b[Kwarning: a warning\n"
        "\rprogress: read and validate 1,000 rows (500 rows/s), 3 s elapsed"
        "\rprogress: read and validate 1,000 rows; transform and encode started (500 rows/s), "
        "5 s elapsed\x1b[K"
        # A phase line ends the progress line, which stays as it last was.
        "\nphase: reconciling counts\n"
    )


def test_an_error_with_a_traceback_names_the_log_that_holds_it(tmp_path):
    handler, stream = console()
    try:
        raise ValueError("boom")
    except ValueError:
        error = sys.exc_info()
    handler.handle(record("pipeline failed", logging.ERROR, exc_info=error))
    assert stream.getvalue().startswith("error: pipeline failed\nTraceback")
    handler.log_path = str(tmp_path / "run.log")
    handler.handle(record("pipeline failed", logging.ERROR, exc_info=error))
    assert stream.getvalue().splitlines()[-1] == (
        f"error: pipeline failed (traceback in {tmp_path / 'run.log'})"
    )


@pytest.fixture
def quiet_console():
    """configure_console as an entry point calls it, undone afterwards."""
    root = logging.getLogger()
    level, handlers, previous = root.level, list(root.handlers), logs._console
    handler = logs.configure_console("WARNING")
    handler._stream = io.StringIO()
    yield handler
    # An earlier test's run() may have left its console handler, which
    # configure_console replaced: put it back. pytest swaps its own capture
    # handlers between a test's phases, so only consoles are compared.
    root.removeHandler(handler)
    if previous is not None and previous not in root.handlers:
        root.addHandler(previous)
    logs._console = previous
    root.setLevel(level)
    consoles = [h for h in root.handlers if isinstance(h, logs.ConsoleHandler)]
    assert consoles == [h for h in handlers if isinstance(h, logs.ConsoleHandler)]


def test_the_run_log_gets_info_from_every_logger_and_the_console_does_not(tmp_path, quiet_console):
    path = str(tmp_path / "out" / "_logs" / "run1.log")
    with run_log(path) as given:
        logging.getLogger("tensorflow").info("Assets written to somewhere")
        logging.getLogger("apache_beam.runners").debug("a debug record")
        logging.info("phase: running the pipeline")
    logging.getLogger("tensorflow").info("after the run")
    text = pathlib.Path(given).read_text()
    assert "INFO tensorflow: Assets written to somewhere" in text
    assert "phase: running the pipeline" in text
    assert "a debug record" not in text and "after the run" not in text
    assert quiet_console.stream.getvalue() == f"log: {path}\nphase: running the pipeline\n"


def test_an_exception_leaving_the_run_is_in_its_log_with_the_traceback(tmp_path, quiet_console):
    path = str(tmp_path / "run.log")
    with pytest.raises(RuntimeError), run_log(path):
        raise RuntimeError("worker lost")
    text = pathlib.Path(path).read_text()
    assert "the run ended with an exception" in text
    assert "RuntimeError: worker lost" in text and "Traceback" in text


def test_old_logs_are_pruned_to_the_newest(tmp_path, quiet_console):
    directory = tmp_path / "_logs"
    directory.mkdir()
    for index in range(logs.KEEP_LOGS + 3):
        (directory / f"2026010{index:02d}.log").write_text("old")
    (directory / "notes.txt").write_text("not a log")
    with run_log(str(directory / "20270101.log")):
        pass
    remaining = sorted(os.listdir(directory))
    newest_old = [f"2026010{index:02d}.log" for index in range(logs.KEEP_LOGS + 3)][4:]
    assert remaining == [*newest_old, "20270101.log", "notes.txt"]


def test_a_remote_output_logs_to_the_local_temp_dir(tmp_path):
    assert run_log_path(str(tmp_path / "out"), "run1") == str(tmp_path / "out/_logs/run1.log")
    remote = run_log_path("gs://bucket/out", "run1")
    assert "://" not in remote and remote.endswith(os.path.join("beam-tft-logs", "run1.log"))


def test_a_folder_of_logs_is_not_an_output_and_survives_a_commit(tmp_path):
    root = tmp_path / "out"
    (root / "_logs").mkdir(parents=True)
    (root / "_logs" / "run1.log").write_text("a failed run's log")
    assert commit.output_state(str(root)) is commit.OutputState.ABSENT
    assert commit.refusal(str(root), overwrite=False) is None
    staging = commit.staging_dir(str(root), "run2")
    os.makedirs(os.path.join(staging, "train"))
    commit.commit(staging, str(root))
    commit.clear_staging_area(str(root))
    assert sorted(os.listdir(root)) == ["_logs", "train"]
    assert (root / "_logs" / "run1.log").read_text() == "a failed run's log"


@pytest.mark.parametrize(
    "argv, level",
    [
        ([], "WARNING"),
        (["--log_level", "info"], "INFO"),
        (["--spec", "s.yaml", "--log_level=DEBUG"], "DEBUG"),
        (["--log_level", "LOUD"], "WARNING"),  # reported by the validators
    ],
)
def test_the_console_level_is_read_before_the_rest(argv, level):
    assert console_level(argv) == level


# --- the entry points ------------------------------------------------------------


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "module, flags",
    [
        ("pipeline.preprocess", ["--spec", "--input", "--output_dir", "--log_level"]),
        ("pipeline.stream", ["--spec", "--transform_dir", "--input_subscription", "--log_level"]),
    ],
)
def test_help_lists_the_flags_with_their_help_and_exits_0(module, flags):
    result = run_module(module, "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for flag in flags:
        (line,) = [line for line in lines if line.startswith(f"  {flag} ")]
        # The help text follows on the flag's line or the next one.
        following = lines[lines.index(line) + 1].strip()
        assert len(line.split(maxsplit=2)) == 3 or following[:1].isupper(), (flag, line)
    assert "Dataset spec YAML" in result.stdout
    assert "https://beam.apache.org/releases/pydoc/" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    "module",
    [
        "pipeline.verify_skew", "pipeline.compare_runs", "pipeline.replay", "pipeline.report",
        "pipeline.sample_data", "trainer.task", "trainer.predict", "trainer.instances",
        "serving.service",
        "schemas.spec",
    ],
)  # fmt: skip
def test_every_small_entry_point_has_help(module):
    result = run_module(module, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")
    assert "show this help message and exit" in result.stdout


def test_a_bad_log_level_is_one_error_line_and_exit_2(tmp_path):
    result = run_module(
        "pipeline.preprocess", "--spec", str(TAXI_SPEC), "--input", "x.csv",
        "--output_dir", str(tmp_path / "out"), "--log_level", "LOUD",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "error: --log_level must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'\n"
    )
    assert not os.path.exists(tmp_path / "out")


# --- a whole run -----------------------------------------------------------------


def run_preprocess(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, str]:
    from pipeline.sample_data import generate_rows, write_csv

    trips = tmp_path / "trips.csv"
    if not trips.exists():
        write_csv(generate_rows(2000, seed=3, messy_fraction=0.01), str(trips))
    output_dir = str(tmp_path / "out")
    # As a person would start it, without run_local.sh's TF_CPP_MIN_LOG_LEVEL.
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [
            sys.executable, "-m", "pipeline.preprocess", "--spec", str(TAXI_SPEC),
            "--input", str(trips), "--output_dir", output_dir, "--runner", "FnApiRunner",
            "--direct_num_workers", "2", "--direct_running_mode", "multi_processing", *extra,
        ],
        cwd=ROOT, capture_output=True, text=True, env=environment, timeout=600,
    )  # fmt: skip
    return result, output_dir


@pytest.mark.slow
def test_a_run_prints_a_short_console_and_logs_the_chatter(tmp_path):
    result, output_dir = run_preprocess(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stderr.splitlines()
    (log_path,) = [line.split("log: ", 1)[1] for line in console if line.startswith("log: ")]
    assert os.path.dirname(log_path) == os.path.join(output_dir, "_logs")
    assert [line for line in console if line.startswith("phase: ")] == [
        "phase: running the pipeline on FnApiRunner with 2 worker process(es), multi_processing",
        "phase: reconciling counts and committing the outputs",
    ]
    assert "progress: read and validate started" in console
    assert len(console) < 12, result.stderr
    assert result.stdout.startswith("read 2000 rows: ")
    log = pathlib.Path(log_path).read_text()
    # TensorFlow's C++ lines (written to fd 2, here and by the worker processes),
    # tfx-bsl's notes, and the workers' forwarded records.
    assert "absl::InitializeLog" in log
    assert "INFO absl: Feature trip_id has a shape" in log
    assert "worker: Python sdk harness exiting." in log
    assert "progress: read and validate started [worker" in log


@pytest.mark.slow
def test_a_failed_run_says_why_in_one_line_and_keeps_its_log(tmp_path):
    result, output_dir = run_preprocess(tmp_path, "--max_bad_fraction", "0.001")
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, result.stderr
    assert "are dead letters, above --max_bad_fraction 0.10%" in errors[0]
    assert len(result.stderr.splitlines()) < 12, result.stderr
    (log,) = pathlib.Path(output_dir, "_logs").iterdir()
    assert "the run ended with an exception" in log.read_text()


REDIRECT_SCRIPT = """
import os, subprocess, sys
from pipeline import logs
logs.configure_console(sys.argv[2])
with logs.run_log(sys.argv[1]):
    os.write(2, b"written to fd 2\\n")
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('from a child\\\\n')"])
    print("error: one line for the person", file=sys.stderr)
print("error: after the run", file=sys.stderr)
"""


@pytest.mark.parametrize("level", ["WARNING", "INFO"])
def test_what_is_written_to_fd_2_during_a_run_goes_to_its_log(tmp_path, level):
    path = tmp_path / "run.log"
    result = subprocess.run(
        [sys.executable, "-c", REDIRECT_SCRIPT, str(path), level],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    below_python = ["written to fd 2", "from a child"]
    console = result.stderr.splitlines()
    people = [f"log: {path}", "error: one line for the person", "error: after the run"]
    if level == "WARNING":
        assert console == people
        assert all(line in path.read_text().splitlines() for line in below_python)
    else:
        # --log_level INFO asks for everything on the console.
        assert console == [people[0], *below_python, *people[1:]]
