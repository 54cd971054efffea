"""Flag validation: one test per class of error, all rejected in validate_options."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from pipeline.options import (
    LOCAL_BATCH_RUNNER,
    MAX_LOCAL_WORKERS,
    local_batch_workers,
    pin_local_runner,
    validate_options,
)
from pipeline.preprocess import OptionsError, prepare
from tests.support import TAXI_SPEC

GOOD = ["--spec", str(TAXI_SPEC), "--input", "x.csv", "--output_dir", "out"]


def problems(*flags: str) -> list[str]:
    return validate_options(PipelineOptions(list(flags)))


def test_good_flags_have_no_problems():
    assert problems(*GOOD) == []


def test_required_flags_are_named_when_missing():
    assert problems() == [
        "--spec is required",
        "--input (or --query) is required",
        "--output_dir is required",
    ]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--max_bad_fraction", "1.5", "--max_bad_fraction must be within [0, 1], got 1.5"),
        ("--max_bad_fraction", "-0.1", "--max_bad_fraction must be within [0, 1], got -0.1"),
        ("--num_shards", "-1", "--num_shards must be >= 0, got -1"),
        ("--parse_batch_size", "0", "--parse_batch_size must be >= 1, got 0"),
    ],
)
def test_out_of_range_values(flag, value, message):
    assert problems(*GOOD, flag, value) == [message]


def test_streaming_is_not_the_batch_job():
    assert problems(*GOOD, "--streaming") == [
        "pipeline.preprocess is the batch job; --streaming is not supported here"
    ]


def test_unknown_flag_is_rejected_before_anything_else():
    with pytest.raises(OptionsError, match="unknown flag\\(s\\): --max_bad_fractoin"):
        prepare([*GOOD, "--max_bad_fractoin", "0.2"])


def test_repeated_input_flags_accumulate():
    options = PipelineOptions([*GOOD, "--input", "y.csv"])
    assert options.get_all_options()["input"] == ["x.csv", "y.csv"]


@pytest.mark.parametrize("given", [None, "DirectRunner"])
def test_local_runner_is_pinned(given):
    flags = GOOD if given is None else [*GOOD, "--runner", given]
    options = PipelineOptions(flags)
    assert pin_local_runner(options) == LOCAL_BATCH_RUNNER


def test_local_batch_run_gets_one_worker_process_per_core(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    options = PipelineOptions(GOOD)
    pin_local_runner(options)
    direct = options.view_as(DirectOptions)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (3, "multi_processing")


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--direct_num_workers", "1"], (1, "in_memory")),
        (["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"],
         (2, "multi_threading")),
    ],
)  # fmt: skip
def test_explicit_local_workers_are_kept(monkeypatch, flags, expected):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    options = PipelineOptions([*GOOD, *flags])
    pin_local_runner(options, [*GOOD, *flags])
    direct = options.view_as(DirectOptions)
    assert (direct.direct_num_workers, direct.direct_running_mode) == expected


@pytest.mark.parametrize("cores, workers", [(None, 1), (1, 1), (2, 2), (64, MAX_LOCAL_WORKERS)])
def test_local_workers_are_capped(cores, workers):
    assert local_batch_workers(cores) == workers


def test_explicit_other_runner_is_kept():
    options = PipelineOptions([*GOOD, "--runner", "DataflowRunner"])
    assert pin_local_runner(options) == "DataflowRunner"


# --- pipeline.stream ------------------------------------------------------------

STREAM_GOOD = [
    "--spec", str(TAXI_SPEC), "--transform_dir", "batch_out", "--output_dir", "stream_out",
    "--input_subscription", "projects/p/subscriptions/trips",
]  # fmt: skip


def stream_problems(*flags: str) -> list[str]:
    from pipeline.options import validate_stream_options

    return validate_stream_options(PipelineOptions(list(flags)))


def test_good_stream_flags_have_no_problems():
    assert stream_problems(*STREAM_GOOD) == []
    assert stream_problems(*STREAM_GOOD, "--allowed_lateness", "0", "--file_window", "90") == []


def test_stream_required_flags_are_named_when_missing():
    assert stream_problems() == [
        "--spec is required",
        "--transform_dir is required",
        "--output_dir is required",
        "give exactly one of --input_subscription and --input_topic",
    ]


def test_stream_takes_exactly_one_input():
    both = [*STREAM_GOOD, "--input_topic", "projects/p/topics/trips"]
    assert stream_problems(*both) == ["give exactly one of --input_subscription and --input_topic"]


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--input_subscription", "trips"),
        ("--output_topic", "projects/p/subscriptions/s"),
        ("--dead_letter_topic", "projects/p/topics"),
    ],
)
def test_pubsub_paths_must_be_full_resource_names(flag, value):
    flags = STREAM_GOOD[:-2] if flag == "--input_subscription" else STREAM_GOOD
    (message,) = stream_problems(*flags, flag, value)
    assert message.startswith(f"{flag} must look like projects/PROJECT/")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--allowed_lateness", "soon"], "--allowed_lateness: 'soon' is not a duration"),
        (["--file_window", "0s"], "--file_window must be positive"),
        (
            ["--allowed_lateness", "2h", "--late_data_horizon", "1h"],
            "--late_data_horizon must be at least --allowed_lateness",
        ),
        (["--transform_batch_size", "0"], "--transform_batch_size must be >= 1, got 0"),
    ],
)
def test_stream_durations_and_sizes(flags, message):
    (problem,) = stream_problems(*STREAM_GOOD, *flags)
    assert problem.startswith(message)


def test_streaming_runs_pin_the_streaming_local_runner():
    from apache_beam.options.pipeline_options import StandardOptions

    from pipeline.options import LOCAL_STREAMING_RUNNER

    options = PipelineOptions(["--streaming"])
    assert pin_local_runner(options) == LOCAL_STREAMING_RUNNER
    assert options.view_as(StandardOptions).runner == LOCAL_STREAMING_RUNNER


def test_a_missing_job_server_jar_is_named_before_anything_runs(tmp_path):
    jar = tmp_path / "missing.jar"
    assert problems(*GOOD, "--runner", "FlinkRunner", "--flink_job_server_jar", str(jar)) == [
        f"--flink_job_server_jar {jar} is not a file; scripts/fetch_job_server.sh fetches the jar"
    ]
    jar.write_bytes(b"PK")
    assert problems(*GOOD, "--runner", "FlinkRunner", "--flink_job_server_jar", str(jar)) == []
