"""run_dataflow.sh --dry_run: the Dataflow job graphs of the batch and the
streaming job are built and written to a job file, with no credentials and
nothing submitted or staged."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support import ROOT, TAXI_SPEC

pytestmark = pytest.mark.slow


def dry_run(mode: str, job_file, **env) -> dict:
    environment = {
        **os.environ,
        "PROJECT": "test-project",
        "REGION": "us-central1",
        "BUCKET": "test-bucket",
        "JOB_FILE": str(job_file),
        # No credentials: Google's libraries must not find any.
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        **env,
    }
    completed = subprocess.run(
        ["bash", str(ROOT / "run_dataflow.sh"), mode, "--dry_run"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"dry run: wrote the Dataflow job to {job_file}" in completed.stdout
    return json.loads(job_file.read_text())


def top_level_steps(job: dict) -> set[str]:
    return {step["name"] for step in job["steps"] if "/" not in step["name"]}


def urns(job: dict) -> set[str]:
    return {step["urn"] for step in job["steps"]}


@pytest.fixture(scope="module")
def small_batch_run(tmp_path_factory):
    """A local CSV and a batch output of it (the streaming job's transform_dir)."""
    from pipeline import preprocess
    from pipeline.sample_data import generate_rows, write_csv

    root = tmp_path_factory.mktemp("dry_run")
    csv_path = root / "taxi.csv"
    write_csv(generate_rows(600, seed=2, messy_fraction=0.0), str(csv_path))
    out = root / "batch"
    argv = ["--spec", str(TAXI_SPEC), "--input", str(csv_path), "--output_dir", str(out)]
    assert preprocess.run(argv) == 0
    return csv_path, out


def test_batch_dry_run_writes_the_job_graph(small_batch_run, tmp_path):
    csv_path, _ = small_batch_run
    job = dry_run("batch", tmp_path / "batch.json", INPUT=str(csv_path))
    assert job["job"]["type"] == "JOB_TYPE_BATCH"
    expected = {
        "ReadCsv",
        "ValidateRows",
        "JoinAggregates",
        "SplitRows",
        "AnalyzeAndTransform",
        "WriteTransformFn",
        "WriteDeadLetters",
        "WriteCounts",
        *(f"WriteExamples[{split}]" for split in ("train", "eval", "test")),
    }
    assert expected <= top_level_steps(job)
    # Dataflow runs the SDK in a container and installs this project into it.
    (environment,) = job["environments"].values()
    assert environment["urn"] == "beam:env:docker:v1"


def test_stream_dry_run_writes_the_streaming_job_graph(small_batch_run, tmp_path):
    _, transform_dir = small_batch_run
    job = dry_run(
        "stream",
        tmp_path / "stream.json",
        TRANSFORM_DIR=str(transform_dir),
        SUBSCRIPTION="projects/test-project/subscriptions/trips",
        OUTPUT_TOPIC="projects/test-project/topics/features",
    )
    assert job["job"]["type"] == "JOB_TYPE_STREAMING"
    expected = {
        "ReadMessages",
        "ValidateMessages",
        "AdmitOnTime",
        "JoinLiveAggregates",
        "TransformRows",
        "WriteExamples",
        "WriteDeadLetters",
        "PublishResults",
    }
    assert expected <= top_level_steps(job)
    # Dataflow's native Pub/Sub source and sink, not the DirectRunner's.
    assert {"beam:transform:pubsub_read:v1", "beam:transform:pubsub_write:v1"} <= urns(job)


def test_dry_run_needs_a_job_file_and_the_dataflow_runner():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.dataflow import dry_run_problems

    assert dry_run_problems(PipelineOptions(["--dry_run", "true"])) == [
        "--dry_run builds a Dataflow job graph; give --runner DataflowRunner",
        "--dry_run needs --dataflow_job_file PATH for the job description",
    ]
    assert dry_run_problems(PipelineOptions(["--dry_run", "maybe"])) == [
        "--dry_run takes true or false, got 'maybe'"
    ]
    assert dry_run_problems(PipelineOptions(["--dry_run", "false"])) == []
