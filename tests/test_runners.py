"""The batch job gives equivalent outputs on other runners (pipeline.compare_runs).

Beam's portable job API with its embedded job service runs here always; Flink and
Spark need Beam's job-server jars, fetched by scripts/fetch_job_server.sh, and
skip with the script's reason when this machine's Maven registry cannot serve
them.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import ROOT, TAXI_SPEC

pytestmark = pytest.mark.slow
ROWS = 5000


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory):
    from pipeline.sample_data import generate_rows, write_csv

    path = tmp_path_factory.mktemp("runners") / "taxi.csv"
    write_csv(generate_rows(ROWS, seed=11), str(path))
    return path


def preprocess(csv_path, output_dir, *runner_flags) -> None:
    from pipeline import preprocess as job

    argv = ["--spec", str(TAXI_SPEC), "--input", str(csv_path), "--output_dir", str(output_dir)]
    assert job.run([*argv, *runner_flags]) == 0


@pytest.fixture(scope="module")
def direct_output(sample_csv, tmp_path_factory):
    output = tmp_path_factory.mktemp("direct") / "out"
    preprocess(sample_csv, output)
    return output


def assert_equivalent(output_a, output_b):
    from pipeline.compare_runs import compare

    report = compare(str(output_a), str(output_b))
    assert report["problems"] == []
    assert sum(split["keys"] for split in report["splits"].values()) > ROWS * 0.9


def test_portable_job_api_gives_the_same_output(sample_csv, direct_output, tmp_path):
    output = tmp_path / "portable"
    preprocess(
        sample_csv, output, "--runner", "PortableRunner", "--job_endpoint", "embed",
        "--environment_type", "LOOPBACK",
    )  # fmt: skip
    assert_equivalent(direct_output, output)


def test_compare_runs_finds_a_changed_vocabulary(direct_output, tmp_path):
    from pipeline.compare_runs import compare

    copy = tmp_path / "copy"
    shutil.copytree(direct_output, copy)
    vocabulary = sorted((copy / "transform_fn" / "assets").iterdir())[0]
    vocabulary.write_text(vocabulary.read_text() + "extra\n")
    assert compare(str(direct_output), str(copy))["problems"] == [
        f"vocabulary {vocabulary.name} differs"
    ]


def job_server_jar(runner: str) -> str:
    completed = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch_job_server.sh"), runner],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.splitlines() if "fetch_job_server:" in line]
        reason = lines[-1][lines[-1].index("fetch_job_server:") :] if lines else "no output"
        pytest.skip(f"Beam's {runner} job-server jar cannot be obtained here: {reason}")
    return completed.stdout.strip()


def test_flink_gives_the_same_output(sample_csv, direct_output, tmp_path):
    jar = job_server_jar("flink")
    output = tmp_path / "flink"
    preprocess(
        sample_csv, output, "--runner", "FlinkRunner", "--flink_master", "[local]",
        "--flink_job_server_jar", jar, "--environment_type", "LOOPBACK",
    )  # fmt: skip
    assert_equivalent(direct_output, output)


def test_spark_gives_the_same_output(sample_csv, direct_output, tmp_path):
    jar = job_server_jar("spark")
    output = tmp_path / "spark"
    preprocess(
        sample_csv, output, "--runner", "SparkRunner", "--spark_master_url", "local[2]",
        "--spark_job_server_jar", jar, "--environment_type", "LOOPBACK",
    )  # fmt: skip
    assert_equivalent(direct_output, output)
