"""Flag validation: one test per class of error, all rejected in validate_options."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import LOCAL_BATCH_RUNNER, pin_local_runner, validate_options
from pipeline.preprocess import OptionsError, prepare
from tests.conftest import TAXI_SPEC

GOOD = ["--spec", str(TAXI_SPEC), "--input", "x.csv", "--output_dir", "out"]


def problems(*flags: str) -> list[str]:
    return validate_options(PipelineOptions(list(flags)))


def test_good_flags_have_no_problems():
    assert problems(*GOOD) == []


def test_required_flags_are_named_when_missing():
    assert problems() == [
        "--spec is required",
        "--input is required",
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


def test_explicit_other_runner_is_kept():
    options = PipelineOptions([*GOOD, "--runner", "DataflowRunner"])
    assert pin_local_runner(options) == "DataflowRunner"
