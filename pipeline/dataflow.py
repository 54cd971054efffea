"""Dataflow dry runs: build the job graph that would be submitted, write it to a
local job file, and submit nothing.

    python -m pipeline.preprocess ... --runner DataflowRunner --project P --region R \\
        --temp_location gs://B/tmp --dry_run true --dataflow_job_file job.json

Beam's own --dry_run stops DataflowRunner just before it talks to the service;
--dataflow_job_file names where the job description goes. Nothing needs
credentials: no file is staged and no output is written.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, StandardOptions
from apache_beam.options.pipeline_options import TestOptions as BeamTestOptions

DATAFLOW_RUNNER = "DataflowRunner"
_TRUE = ("true", "True", "1")


def dry_run_requested(options: PipelineOptions) -> bool:
    return options.view_as(BeamTestOptions).dry_run in (True, *_TRUE)


def dry_run_problems(options: PipelineOptions) -> list[str]:
    """Problems with --dry_run and --dataflow_job_file, for the flag validators."""
    value = options.view_as(BeamTestOptions).dry_run
    if value in (False, None):
        return []
    problems = []
    if value not in (True, *_TRUE, "false", "False", "0"):
        problems.append(f"--dry_run takes true or false, got {value!r}")
    if dry_run_requested(options):
        if options.view_as(StandardOptions).runner != DATAFLOW_RUNNER:
            problems.append("--dry_run builds a Dataflow job graph; give --runner DataflowRunner")
        if not options.view_as(DebugOptions).dataflow_job_file:
            problems.append("--dry_run needs --dataflow_job_file PATH for the job description")
    return problems


def job_description(job) -> dict:
    """What a dry run knows of the job: Beam's Job message (name, type) and the
    steps of the portable pipeline that Dataflow would run, by unique name.

    Dataflow runs the portable pipeline (Runner v2): the job message itself lists
    no steps, and the pipeline proto is normally staged to GCS, which a dry run
    skips, so the steps are taken from the pipeline proto here.
    """
    import json

    transforms = job.proto_pipeline.components.transforms
    steps = [
        {
            "name": transform.unique_name,
            "urn": transform.spec.urn,
            "composite": bool(transform.subtransforms),
        }
        for transform in transforms.values()
        if transform.unique_name
    ]
    environments = {
        env_id: {"urn": env.urn, "dependencies": [d.role_urn for d in env.dependencies]}
        for env_id, env in job.proto_pipeline.components.environments.items()
    }
    return {
        "job": json.loads(job.json()),
        "steps": sorted(steps, key=lambda step: step["name"]),
        "environments": environments,
    }


def write_job_file(result, options: PipelineOptions) -> str:
    """Writes the job description of a dry run's result; returns its path."""
    import json

    from apache_beam.io.filesystems import FileSystems

    path = options.view_as(DebugOptions).dataflow_job_file
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(job_description(result.job), indent=1).encode("utf-8"))
    return path
