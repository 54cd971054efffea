"""Pipeline options of this project, grouped by concern, and their one validator.

Beam's own flags (--runner, --project, --region, --temp_location, ...) are never
redefined here; code reads them with `options.view_as(...)`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import apache_beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipeline.dataflow import dry_run_problems

# Beam's DirectRunner picks an engine at run time and may download the Prism
# runner first; this is Beam's batch DirectRunner engine, named explicitly, so a
# laptop with internet and a machine without it run the same thing.
LOCAL_BATCH_RUNNER = "FnApiRunner"
# Upper bound on the worker processes of a local batch run (see local_batch_workers).
MAX_LOCAL_WORKERS = 4
# The streaming-capable engine of the Python DirectRunner (TestStream, Pub/Sub,
# watermarks and triggers); FnApiRunner runs bounded pipelines only.
LOCAL_STREAMING_RUNNER = "BundleBasedDirectRunner"


# What --log_level accepts, quietest last; the console's default.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_LEVEL = "WARNING"


class OptionsError(ValueError):
    """An invalid flag or combination of flags (exit code 2)."""


class DatasetOptions(PipelineOptions):
    """The dataset spec and the output directory, shared by every entry point.

    They live in one class because Beam parses every PipelineOptions subclass
    into one argparse parser, where a flag may be defined only once.
    --spec and --output_dir are required, but checked in the validators rather
    than with argparse's required=True: Beam parses every subclass for every
    pipeline in the process, so a required flag here would break unrelated
    pipelines (and tests) that never set it.
    """

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--spec", type=str, default=None, help="Dataset spec YAML (e.g. schemas/taxi.yaml)."
        )
        parser.add_argument(
            "--output_dir",
            type=str,
            default=None,
            help="Output directory, local or on any Beam filesystem (gs://...).",
        )
        parser.add_argument(
            "--num_shards",
            type=int,
            default=0,
            help="TFRecord shards per split (batch) or per window (streaming); 0 lets the runner "
            "choose.",
        )
        parser.add_argument(
            "--write_raw_features",
            action="store_true",
            default=False,
            help="Also write the validated raw rows with their aggregates and keys under "
            "OUTPUT/raw_features/ (Parquet in batch, JSON lines in streaming).",
        )


def add_input_flags(parser) -> None:
    """--input and --query: PreprocessOptions' flags, which pipeline.materialize
    reads too (see InputOverrideHelp)."""
    parser.add_argument(
        "--input",
        type=str,
        action="append",
        default=None,
        help="CSV file or glob, local or on any Beam filesystem (gs://...); plain or "
        ".gz. Repeat the flag for several patterns. Or one BigQuery table, "
        "bq://project.dataset.table.",
    )
    parser.add_argument(
        "--query",
        type=str,
        default=None,
        help="A standard-SQL BigQuery query whose rows are the input (instead of --input).",
    )


class PreprocessOptions(PipelineOptions):
    """Inputs and policies of the batch preprocessing job."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_input_flags(parser)
        parser.add_argument(
            "--max_bad_fraction",
            type=float,
            default=0.05,
            help="Fail the run when dead letters exceed this fraction of the rows read.",
        )
        parser.add_argument(
            "--overwrite",
            action="store_true",
            default=False,
            help="Replace an existing complete output directory (one with a manifest).",
        )
        parser.add_argument(
            "--baseline_output_dir",
            type=str,
            default=None,
            help="Output directory of an earlier run: its statistics are the baseline for the "
            "drift checks (thresholds in the spec's 'anomalies' section).",
        )
        parser.add_argument(
            "--fail_on_anomalies",
            action="store_true",
            default=False,
            help="Fail the run (exit 1, nothing committed) when the statistics show anomalies.",
        )
        parser.add_argument(
            "--parse_batch_size",
            type=int,
            default=4096,
            help="Lines parsed per Arrow batch; larger batches amortise per-batch overhead.",
        )


class WorkaroundOptions(PipelineOptions):
    """Turns off a local-runner workaround (pipeline/workarounds/) for one run."""

    @classmethod
    def _add_argparse_args(cls, parser):
        from pipeline.workarounds import NAMES

        parser.add_argument(
            "--disable_workaround",
            action="append",
            choices=NAMES,
            default=[],
            help="Run without this workaround of Beam's local runners (repeat for several): "
            "Beam's own behaviour applies instead. Used to measure what each one gains; "
            "see pipeline/workarounds/__init__.py.",
        )


def validate_options(options: PipelineOptions) -> list[str]:
    """Every problem with the flags, as messages; empty when the flags are usable."""
    preprocess = options.view_as(PreprocessOptions)
    dataset = options.view_as(DatasetOptions)
    problems = [
        f"{flag} is required"
        for flag, value in (
            ("--spec", dataset.spec),
            ("--input (or --query)", preprocess.input or preprocess.query),
            ("--output_dir", dataset.output_dir),
        )
        if not value
    ]
    if not 0.0 <= preprocess.max_bad_fraction <= 1.0:
        problems.append(
            f"--max_bad_fraction must be within [0, 1], got {preprocess.max_bad_fraction}"
        )
    if dataset.num_shards < 0:
        problems.append(f"--num_shards must be >= 0, got {dataset.num_shards}")
    if preprocess.parse_batch_size < 1:
        problems.append(f"--parse_batch_size must be >= 1, got {preprocess.parse_batch_size}")
    if options.view_as(StandardOptions).streaming:
        problems.append("pipeline.preprocess is the batch job; --streaming is not supported here")
    problems += log_level_problems(options)
    return problems + dry_run_problems(options) + job_server_problems(options)


def job_server_problems(options: PipelineOptions) -> list[str]:
    """A Flink or Spark job-server jar that is neither a file nor a URL fails late
    (after TensorFlow has started); name it early instead."""
    import os

    all_options = options.get_all_options()
    problems = []
    for flag in ("flink_job_server_jar", "spark_job_server_jar"):
        jar = all_options.get(flag)
        if jar and "://" not in jar and not os.path.isfile(jar):
            problems.append(
                f"--{flag} {jar} is not a file; scripts/fetch_job_server.sh fetches the jar"
            )
    return problems


def unknown_flags(argv: list[str]) -> list[str]:
    """Flags that no PipelineOptions class defines (typos), sorted."""
    options = PipelineOptions(list(argv))
    known = options.get_all_options(retain_unknown_options=False)
    with_unknown = options.get_all_options(retain_unknown_options=True)
    return sorted(f"--{name}" for name in set(with_unknown) - set(known))


def pin_local_runner(options: PipelineOptions, argv: Sequence[str] = ()) -> str:
    """Resolves an unset or 'DirectRunner' runner to the explicit local engine for
    the pipeline's mode (batch or streaming), and gives a local batch run one
    worker process per core (see `local_batch_workers`) unless `argv` sets
    --direct_num_workers."""
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "SwitchingDirectRunner"):
        standard.runner = LOCAL_STREAMING_RUNNER if standard.streaming else LOCAL_BATCH_RUNNER
    if standard.runner == LOCAL_BATCH_RUNNER and not flag_given(argv, "direct_num_workers"):
        direct = options.view_as(DirectOptions)
        direct.direct_num_workers = local_batch_workers(os.cpu_count())
        if direct.direct_num_workers > 1 and not flag_given(argv, "direct_running_mode"):
            direct.direct_running_mode = "multi_processing"
    return standard.runner


def flag_given(argv: Sequence[str], name: str) -> bool:
    """Whether --name appears in `argv` (as "--name value" or "--name=value")."""
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in argv)


def local_batch_workers(cpu_count: int | None) -> int:
    """SDK worker processes for a local batch run: one per core, at most
    MAX_LOCAL_WORKERS. The Python work of a bundle holds the GIL, so threads do
    not help, and each process carries its own TensorFlow (about 0.4 GB), which
    is what the cap bounds."""
    return max(1, min(cpu_count or 1, MAX_LOCAL_WORKERS))


class StreamOptions(PipelineOptions):
    """Inputs, outputs and event-time policies of the streaming job."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--transform_dir",
            type=str,
            default=None,
            help="Output directory of a batch pipeline.preprocess run: its transform_fn "
            "transforms every live event, and its manifest must match --spec.",
        )
        parser.add_argument(
            "--input_subscription",
            type=str,
            default=None,
            help="Pub/Sub subscription to read, projects/P/subscriptions/S.",
        )
        parser.add_argument(
            "--input_topic",
            type=str,
            default=None,
            help="Pub/Sub topic to read through a temporary subscription, projects/P/topics/T "
            "(instead of --input_subscription).",
        )
        parser.add_argument(
            "--output_topic",
            type=str,
            default=None,
            help="Pub/Sub topic for transformed examples (attribute kind=example) and each "
            "period's aggregate values per key (kind=aggregate), projects/P/topics/T.",
        )
        parser.add_argument(
            "--dead_letter_topic",
            type=str,
            default=None,
            help="Pub/Sub topic for dead letters as JSON; without it they go to "
            "OUTPUT/dead_letter/.",
        )
        parser.add_argument(
            "--allowed_lateness",
            type=str,
            default="2min",
            help="How far behind the watermark an event may arrive and still be admitted "
            "(e.g. 90s, 2min). Each event leaves this long after its admission window closes.",
        )
        parser.add_argument(
            "--late_data_horizon",
            type=str,
            default="1d",
            help="Events later than --allowed_lateness but within this horizon are "
            "dead-lettered with reason 'late'; the runner drops events later still.",
        )
        parser.add_argument(
            "--file_window",
            type=str,
            default="5min",
            help="Event-time span of each set of output files (examples, dead letters).",
        )
        parser.add_argument(
            "--transform_batch_size",
            type=int,
            default=256,
            help="Rows per call of the transform graph.",
        )


class OnlineStoreOptions(PipelineOptions):
    """The online store of the aggregates: a Bigtable table (transforms.online_store)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--bigtable_project",
            type=str,
            default=None,
            help="Google Cloud project of the Bigtable instance. With the emulator "
            "(BIGTABLE_EMULATOR_HOST set), any name.",
        )
        parser.add_argument(
            "--bigtable_instance",
            type=str,
            default=None,
            help="Bigtable instance of the online store; with --bigtable_table, the "
            "streaming job writes each final period value there.",
        )
        parser.add_argument(
            "--bigtable_table",
            type=str,
            default=None,
            help="Bigtable table of the online store: one row per (aggregate, entity), "
            "one cell per period.",
        )
        parser.add_argument(
            "--online_retention",
            type=str,
            default="7d",
            help="Periods older than this (by event time) are garbage-collected by "
            "Bigtable; set when the job creates the table.",
        )
        parser.add_argument(
            "--create_table",
            type=str,
            choices=("if_missing", "never"),
            default="if_missing",
            help="if_missing: create the table and its column family before writing "
            "(needs Bigtable admin rights); never: the table must exist.",
        )


def online_store_table(options: PipelineOptions):
    """The --bigtable_* table, or None when no online store is named."""
    from transforms.online_store import StoreTable

    store = options.view_as(OnlineStoreOptions)
    if not (store.bigtable_instance or store.bigtable_table):
        return None
    return StoreTable(store.bigtable_project, store.bigtable_instance, store.bigtable_table)


def create_online_store_if_missing(options: PipelineOptions, spec) -> None:
    """Creates the table (and column family) of the store the --bigtable_*
    flags name, when there is one and --create_table is if_missing. Commands
    call it before their pipeline starts, never while building it (a dry run
    or a test's pipeline must not create tables)."""
    from transforms.online_store import ensure_table

    store = online_store_table(options)
    flags = options.view_as(OnlineStoreOptions)
    if store is not None and flags.create_table == "if_missing":
        ensure_table(store, spec, duration_seconds(flags.online_retention))


def online_store_problems(options: PipelineOptions, required: bool) -> list[str]:
    """Problems with the --bigtable_* flags; `required`: the command needs a store."""
    store = options.view_as(OnlineStoreOptions)
    named = {
        "--bigtable_project": store.bigtable_project,
        "--bigtable_instance": store.bigtable_instance,
        "--bigtable_table": store.bigtable_table,
    }
    problems = []
    if any(named.values()) or required:
        suffix = "" if required else " with the other --bigtable_* flags"
        problems += [f"{flag} is required{suffix}" for flag, value in named.items() if not value]
    try:
        if duration_seconds(store.online_retention) <= 0:
            problems.append("--online_retention must be positive")
    except ValueError as error:
        problems.append(f"--online_retention: {error}")
    return problems


def duration_seconds(value: str) -> int:
    """Seconds in a duration flag: '90', '90s', '5min', '1h', '1d'; zero is allowed."""
    from schemas.spec import parse_duration

    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if text in ("0s", "0min", "0m", "0h", "0d"):
        return 0
    return parse_duration(text)


def validate_stream_options(options: PipelineOptions) -> list[str]:
    """Every problem with the streaming job's flags, as messages."""
    dataset = options.view_as(DatasetOptions)
    stream = options.view_as(StreamOptions)
    problems = [
        f"{flag} is required"
        for flag, value in (
            ("--spec", dataset.spec),
            ("--transform_dir", stream.transform_dir),
            ("--output_dir", dataset.output_dir),
        )
        if not value
    ]
    if bool(stream.input_subscription) == bool(stream.input_topic):
        problems.append("give exactly one of --input_subscription and --input_topic")
    for flag, value, kind in (
        ("--input_subscription", stream.input_subscription, "subscriptions"),
        ("--input_topic", stream.input_topic, "topics"),
        ("--output_topic", stream.output_topic, "topics"),
        ("--dead_letter_topic", stream.dead_letter_topic, "topics"),
    ):
        parts = (value or "").split("/")
        if value and (len(parts) != 4 or parts[0] != "projects" or parts[2] != kind):
            problems.append(f"{flag} must look like projects/PROJECT/{kind}/NAME, got {value!r}")
    durations = {}
    for flag, value in (
        ("--allowed_lateness", stream.allowed_lateness),
        ("--late_data_horizon", stream.late_data_horizon),
        ("--file_window", stream.file_window),
    ):
        try:
            durations[flag] = duration_seconds(value)
        except ValueError as error:
            problems.append(f"{flag}: {error}")
    if durations.get("--file_window") == 0:
        problems.append("--file_window must be positive")
    if durations.get("--late_data_horizon", 1) < durations.get("--allowed_lateness", 0):
        problems.append("--late_data_horizon must be at least --allowed_lateness")
    if dataset.num_shards < 0:
        problems.append(f"--num_shards must be >= 0, got {dataset.num_shards}")
    if stream.transform_batch_size < 1:
        problems.append(f"--transform_batch_size must be >= 1, got {stream.transform_batch_size}")
    problems += online_store_problems(options, required=False)
    problems += log_level_problems(options)
    return problems + dry_run_problems(options)


class MaterializeOptions(PipelineOptions):
    """What pipeline.materialize loads into the online store, and from which run."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--run_dir",
            type=str,
            default=None,
            help="Output directory of a complete pipeline.preprocess run: its spec.json gives "
            "the aggregates, its manifest.json the inputs to read again.",
        )
        parser.add_argument(
            "--start",
            type=str,
            default=None,
            help="Write only periods that end after this event time (ISO 8601, UTC unless it "
            "has an offset, or epoch seconds); the values still see the rows before it.",
        )
        parser.add_argument(
            "--end",
            type=str,
            default=None,
            help="Write only periods that start before this event time (as --start).",
        )


class InputOverrideHelp:
    """Input (default: the inputs that the run's manifest records)

    Not a PipelineOptions class: the flags are PreprocessOptions' --input and
    --query, listed again in pipeline.materialize --help (Beam parses a flag
    of one name once)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_input_flags(parser)


def event_time_flag(flag: str, value: str | None) -> int | None:
    """Seconds since the epoch of an event-time flag (ISO 8601, UTC without an
    offset, or epoch seconds); raises ValueError naming the flag."""
    import datetime

    from transforms.validation import parse_timestamp_text

    if value is None:
        return None
    seconds = parse_timestamp_text(str(value).strip(), datetime.UTC)
    if seconds is None:
        raise ValueError(f"{flag} {value!r} is not a timestamp (ISO 8601 or epoch seconds)")
    return seconds


def validate_materialize_options(options: PipelineOptions) -> list[str]:
    """Every problem with pipeline.materialize's flags, as messages."""
    materialize = options.view_as(MaterializeOptions)
    preprocess = options.view_as(PreprocessOptions)
    problems = [] if materialize.run_dir else ["--run_dir is required"]
    bounds = {}
    for flag, value in (("--start", materialize.start), ("--end", materialize.end)):
        try:
            bounds[flag] = event_time_flag(flag, value)
        except ValueError as error:
            problems.append(str(error))
    start, end = bounds.get("--start"), bounds.get("--end")
    if start is not None and end is not None and end <= start:
        problems.append("--end must be later than --start")
    if preprocess.input and preprocess.query:
        problems.append("give either --input or --query, not both")
    if preprocess.parse_batch_size < 1:
        problems.append(f"--parse_batch_size must be >= 1, got {preprocess.parse_batch_size}")
    if options.view_as(StandardOptions).streaming:
        problems.append("pipeline.materialize is a batch job; --streaming is not supported here")
    problems += online_store_problems(options, required=True)
    problems += log_level_problems(options)
    return problems + job_server_problems(options)


class LoggingOptions(PipelineOptions):
    """What the console shows; shared by every entry point (see pipeline/logs.py)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        # Checked in the validators, not with argparse's choices=, so that a bad
        # value is one error line and exit code 2 like every other flag problem.
        parser.add_argument(
            "--log_level",
            type=str,
            default=DEFAULT_LOG_LEVEL,
            help="Log records the console shows besides the run's phase, progress and summary "
            f"lines: one of {', '.join(LOG_LEVELS)} (default {DEFAULT_LOG_LEVEL}). INFO or "
            "DEBUG brings TensorFlow's and Beam's messages back to the console; the run's log "
            "file (OUTPUT/_logs/) always gets INFO and above.",
        )


def log_level_name(value: str | None) -> str | None:
    """The level name --log_level `value` stands for (any case), or None."""
    name = str(value or "").strip().upper()
    return name if name in LOG_LEVELS else None


def log_level_problems(options: PipelineOptions) -> list[str]:
    value = options.view_as(LoggingOptions).log_level
    if log_level_name(value):
        return []
    return [f"--log_level must be one of {', '.join(LOG_LEVELS)}, got {value!r}"]


def console_level(argv: Sequence[str]) -> str:
    """The --log_level of `argv`, read before the rest is checked, so that the
    console is set up first; the default when it is missing or invalid (the
    validators then report an invalid one)."""
    value = None
    for index, arg in enumerate(argv):
        if arg == "--log_level" and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith("--log_level="):
            value = arg.split("=", 1)[1]
    return log_level_name(value) or DEFAULT_LOG_LEVEL


# --- --help ----------------------------------------------------------------------

# Beam's own flags are parsed by Beam, and `python -m apache_beam.options.pipeline_options`
# prints nothing; its reference lists them, for the installed version.
BEAM_OPTIONS_URL = (
    "https://beam.apache.org/releases/pydoc/{version}/apache_beam.options.pipeline_options.html"
)
BATCH_OPTION_CLASSES = (DatasetOptions, PreprocessOptions, LoggingOptions, WorkaroundOptions)
STREAM_OPTION_CLASSES = (
    DatasetOptions,
    StreamOptions,
    OnlineStoreOptions,
    LoggingOptions,
    WorkaroundOptions,
)
MATERIALIZE_OPTION_CLASSES = (
    MaterializeOptions,
    InputOverrideHelp,
    OnlineStoreOptions,
    LoggingOptions,
)


def help_requested(argv: Sequence[str]) -> bool:
    return any(arg in ("-h", "--help") for arg in argv)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and epilog's line breaks, and names each flag's
    default unless its help already does or there is none to name."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def help_text(prog: str, description: str, option_classes: Sequence[type]) -> str:
    """--help of an entry point whose flags are PipelineOptions classes: each
    class's flags under its docstring's first line, then where Beam's flags are
    documented. `prog` names it, unless it runs as an installed command
    (setup.py's console_scripts), whose name it then takes."""
    command = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    parser = argparse.ArgumentParser(
        prog=command if command and not command.endswith(".py") and command != "-c" else prog,
        description=description,
        formatter_class=_HelpFormatter,
        epilog=(
            "Beam's own flags (--runner, --temp_location, --project, --region,\n"
            "--direct_num_workers, ...) are accepted too; Beam's pipeline options\n"
            "reference lists them:\n  "
            + BEAM_OPTIONS_URL.format(version=apache_beam.__version__)
            + "\nA flag that neither this command nor Beam defines is an error."
        ),
    )
    for option_class in option_classes:
        title = (option_class.__doc__ or option_class.__name__).strip().split("\n")[0]
        option_class._add_argparse_args(parser.add_argument_group(title.rstrip(".")))
    return parser.format_help()
