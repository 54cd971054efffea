"""Where a run's outputs live: every directory and file name, defined once.

The batch job, the run report, the trainer, the streaming job and the tools
(verify_skew, compare_runs, replay, benchmarks) all find a run's files through
this module, so a name changes in one place. It imports nothing heavy: the
trainer and the report use it without Beam's filesystems.

A batch run's output directory:

    OUTPUT/
      manifest.json                 written last: its presence marks a complete run
      spec.json                     the dataset spec of the run (trainer, serving)
      <split>/part-*.tfrecord.gz    transformed tf.train.Examples, one directory per split
      transform_fn/                 the tf.Transform graph (SavedModel)
      transformed_metadata/         the transformed schema (tft.TFTransformOutput)
      metadata/                     the raw schema (TFTransformOutput.raw_metadata)
      stats/raw_train.json          statistics of the raw rows of the analyzed split
      stats/transformed_<split>.json
      dead_letter/dead_letter-*.jsonl
      raw_features/<split>/part-*.parquet   with --write_raw_features
      report.html
      _staging/<run id>/            a run in progress (pipeline/commit.py)
      _logs/<run id>.log            each run's log (pipeline/logs.py), not part of a run
      _counts/, tft_tmp/            scratch of a run in progress, removed before the commit

A streaming run's output directory:

    STREAM_OUT/
      stream.json                   written at start: spec hash, transform_fn, flags
      examples/  dead_letter/  raw_features/
"""

from __future__ import annotations

import dataclasses
import os
import posixpath

# The split tf.Transform analyzes; the raw statistics describe it too.
ANALYZE_SPLIT = "train"

MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.html"
SPEC_NAME = "spec.json"
# As tft.TFTransformOutput names them (TRANSFORM_FN_DIR, TRANSFORMED_METADATA_DIR,
# RAW_METADATA_DIR); spelled out so that reading a layout needs no TensorFlow.
TRANSFORM_FN_DIR = "transform_fn"
TRANSFORMED_METADATA_DIR = "transformed_metadata"
RAW_METADATA_DIR = "metadata"
SCHEMA_FILE = "schema.pbtxt"
STATS_DIR = "stats"
RAW_STATISTICS_FILE = f"raw_{ANALYZE_SPLIT}.json"
DEAD_LETTER_DIR = "dead_letter"
RAW_FEATURES_DIR = "raw_features"
EXAMPLES_SUFFIX = ".tfrecord.gz"
PARQUET_SUFFIX = ".parquet"
JSON_LINES_SUFFIX = ".jsonl"
DEAD_LETTER_SUFFIX = JSON_LINES_SUFFIX
# Under OUTPUT but never part of a committed run.
STAGING_DIR = "_staging"
# The runs' log files (pipeline/logs.py), kept for failed runs too.
LOGS_DIR = "_logs"
COUNTS_DIR = "_counts"
TFT_TEMP_DIR = "tft_tmp"

STREAM_START_RECORD = "stream.json"
STREAM_EXAMPLES_DIR = "examples"


def join(directory: str, *parts: str) -> str:
    """`directory`/`parts`, for local paths and URLs (gs://...) alike."""
    if "://" in directory:
        return posixpath.join(directory, *parts)
    return os.path.join(directory, *parts)


def raw_statistics_relpath() -> str:
    return posixpath.join(STATS_DIR, RAW_STATISTICS_FILE)


def transformed_statistics_relpath(split: str) -> str:
    return posixpath.join(STATS_DIR, f"transformed_{split}.json")


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """The paths of one batch run under `root`: its output directory, or its
    staging directory while it runs (see pipeline/commit.py)."""

    root: str
    run_id: str = ""

    def split_prefix(self, split: str) -> str:
        return join(self.root, split, "part")

    def split_pattern(self, split: str) -> str:
        return self.split_prefix(split) + "*"

    def raw_features_prefix(self, split: str) -> str:
        return join(self.root, RAW_FEATURES_DIR, split, "part")

    def raw_features_pattern(self, split: str = "*") -> str:
        return join(self.root, RAW_FEATURES_DIR, split, "*" + PARQUET_SUFFIX)

    @property
    def dead_letter_prefix(self) -> str:
        return join(self.root, DEAD_LETTER_DIR, "dead_letter")

    @property
    def dead_letter_pattern(self) -> str:
        return self.dead_letter_prefix + "*"

    @property
    def raw_statistics_path(self) -> str:
        return join(self.root, raw_statistics_relpath())

    def transformed_statistics_path(self, split: str) -> str:
        return join(self.root, transformed_statistics_relpath(split))

    @property
    def counts_dir(self) -> str:
        return join(self.root, COUNTS_DIR)

    @property
    def counts_path(self) -> str:
        return join(self.counts_dir, "counts.json")

    @property
    def manifest_path(self) -> str:
        return join(self.root, MANIFEST_NAME)

    @property
    def spec_path(self) -> str:
        return join(self.root, SPEC_NAME)

    @property
    def report_path(self) -> str:
        return join(self.root, REPORT_NAME)

    @property
    def transform_fn_dir(self) -> str:
        return join(self.root, TRANSFORM_FN_DIR)

    @property
    def vocabulary_dir(self) -> str:
        return join(self.transform_fn_dir, "assets")

    @property
    def transformed_schema_path(self) -> str:
        return join(self.root, TRANSFORMED_METADATA_DIR, SCHEMA_FILE)

    @property
    def raw_metadata_dir(self) -> str:
        return join(self.root, RAW_METADATA_DIR)

    def temp_dir(self, temp_location: str | None) -> str:
        # tf.Transform's temp files must be visible to every worker, so they live
        # under the output or --temp_location, never in a process-local mkdtemp().
        if temp_location:
            return join(temp_location, TFT_TEMP_DIR, self.run_id or "run")
        return join(self.root, TFT_TEMP_DIR)


@dataclasses.dataclass(frozen=True)
class StreamLayout:
    """The paths of a streaming job's outputs under `root`."""

    root: str

    @property
    def examples_dir(self) -> str:
        return join(self.root, STREAM_EXAMPLES_DIR)

    @property
    def dead_letter_dir(self) -> str:
        return join(self.root, DEAD_LETTER_DIR)

    @property
    def raw_features_dir(self) -> str:
        return join(self.root, RAW_FEATURES_DIR)

    @property
    def start_record_path(self) -> str:
        return join(self.root, STREAM_START_RECORD)
