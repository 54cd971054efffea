"""Pipeline options of this project, grouped by concern, and their one validator.

Beam's own flags (--runner, --project, --region, --temp_location, ...) are never
redefined here; code reads them with `options.view_as(...)`.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

# Beam's DirectRunner picks an engine at run time and may download the Prism
# runner first; this is Beam's batch DirectRunner engine, named explicitly, so a
# laptop with internet and a machine without it run the same thing.
LOCAL_BATCH_RUNNER = "FnApiRunner"


class OptionsError(ValueError):
    """An invalid flag or combination of flags (exit code 2)."""


class PreprocessOptions(PipelineOptions):
    """Inputs, outputs and policies of the batch preprocessing job.

    --spec, --input and --output_dir are required, but checked in
    validate_options rather than with argparse's required=True: Beam parses every
    PipelineOptions subclass for every pipeline in the process, so a required
    flag here would break unrelated pipelines (and tests) that never set it.
    """

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--spec", type=str, default=None, help="Dataset spec YAML (e.g. schemas/taxi.yaml)."
        )
        parser.add_argument(
            "--input",
            type=str,
            action="append",
            default=None,
            help="CSV file or glob, local or on any Beam filesystem (gs://...); plain or "
            ".gz. Repeat the flag for several patterns.",
        )
        parser.add_argument(
            "--output_dir",
            type=str,
            default=None,
            help="Directory for splits, transform_fn, dead letters and manifest.json.",
        )
        parser.add_argument(
            "--max_bad_fraction",
            type=float,
            default=0.05,
            help="Fail the run when dead letters exceed this fraction of the rows read.",
        )
        parser.add_argument(
            "--write_raw_features",
            action="store_true",
            default=False,
            help="Also write the validated raw rows, with keys, as Parquet under "
            "OUTPUT/raw_features/<split>/.",
        )
        parser.add_argument(
            "--num_shards",
            type=int,
            default=0,
            help="TFRecord shards per split; 0 lets the runner choose.",
        )
        parser.add_argument(
            "--overwrite",
            action="store_true",
            default=False,
            help="Replace an existing complete output directory (one with a manifest).",
        )
        parser.add_argument(
            "--parse_batch_size",
            type=int,
            default=4096,
            help="Lines parsed per Arrow batch; larger batches amortise per-batch overhead.",
        )


def validate_options(options: PipelineOptions) -> list[str]:
    """Every problem with the flags, as messages; empty when the flags are usable."""
    preprocess = options.view_as(PreprocessOptions)
    problems = [
        f"{flag} is required"
        for flag, value in (
            ("--spec", preprocess.spec),
            ("--input", preprocess.input),
            ("--output_dir", preprocess.output_dir),
        )
        if not value
    ]
    if not 0.0 <= preprocess.max_bad_fraction <= 1.0:
        problems.append(
            f"--max_bad_fraction must be within [0, 1], got {preprocess.max_bad_fraction}"
        )
    if preprocess.num_shards < 0:
        problems.append(f"--num_shards must be >= 0, got {preprocess.num_shards}")
    if preprocess.parse_batch_size < 1:
        problems.append(f"--parse_batch_size must be >= 1, got {preprocess.parse_batch_size}")
    if options.view_as(StandardOptions).streaming:
        problems.append("pipeline.preprocess is the batch job; --streaming is not supported here")
    return problems


def pin_local_runner(options: PipelineOptions) -> str:
    """Resolves an unset or 'DirectRunner' runner to the explicit local batch engine."""
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "SwitchingDirectRunner"):
        standard.runner = LOCAL_BATCH_RUNNER
    return standard.runner
