"""Windowed file output of the streaming job: each fixed event-time window of
records goes to files of its own, named by the window.

No producer may fire a window twice: files are named by window, so a second
pane of a window would overwrite the first. Every producer in the streaming
job therefore emits from on-time panes (transforms.admission) or re-stamps its
records at arrival time (`stamp_arrival_time`).
"""

from __future__ import annotations

import time

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampedValue


def stamp_arrival_time(record):
    """Re-stamps a record at the current time.

    For dead letters, which have no trustworthy event time: invalid messages may
    lack one, and late rows would be dropped again by the windows of the file
    sink. Moving a timestamp forward is always allowed.
    """
    return TimestampedValue(record, time.time())


class WriteWindowedFiles(beam.PTransform):
    """Writes each fixed event-time window of records to its own set of files,
    `<directory>/<prefix>-<window start>-<window end>-<shard>-of-<n><suffix>`.

    Input elements must be on time for these windows (see the module docstring).
    `sink` is a fileio.FileSink class, such as transforms.tfrecords.TFRecordGzipSink.
    """

    def __init__(
        self, directory: str, prefix: str, suffix: str, sink, window_seconds: int, shards: int
    ):
        super().__init__()
        self._directory = directory
        self._naming = fileio.default_file_naming(prefix, suffix)
        self._sink = sink
        self._window_seconds = window_seconds
        self._shards = shards or None

    def expand(self, records):
        return (
            records
            | "FileWindows" >> beam.WindowInto(window.FixedWindows(self._window_seconds))
            | "WriteFiles"
            >> fileio.WriteToFiles(
                path=self._directory,
                file_naming=self._naming,
                sink=self._sink,
                shards=self._shards,
            )
        )
