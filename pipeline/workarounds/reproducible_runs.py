"""Makes a local batch run (Beam's FnApiRunner, several worker processes)
reproduce itself bit for bit.

With two or more workers, the same input and spec used to give analyzer results
(means, variances, quantile boundaries) that differed in the last float bits
from run to run. Three things in the local runner depended on timing or chance
rather than on the data:

1. The runner collects each stage's output from all workers into one buffer,
   in the order the chunks arrive. The next stage's input is split among the
   workers by position in that buffer, so which rows meet in one bundle, and
   so each partial accumulator, changed with timing.
2. A GroupByKey lists each key's values in arrival order too, and its keys in
   first-arrival order, which decides the worker each key goes to. tf.Transform
   merges partial accumulators in that order, and float merges do not commute.
3. tf.Transform combines globally with a hot-key fanout, whose bundles pick
   their shard with `random.getrandbits`.

This workaround fixes 1 and 2 in the runner's process: output chunks are sorted
by their bytes before they are split or grouped, and a GroupingBuffer's keys by
their encoded bytes. A chunk holds whole elements (an SDK worker flushes only
between elements, and only by size, unless the experiment
data_buffer_time_limit_ms turns on flushing by time), and a worker's chunks
depend only on its input, so sorted order is a function of the data. The cost
is a sort of chunk references, not of rows: no measurable time at 1M rows
(benchmarks/README). Timer buffers keep their order, which the runner relies on.
It fixes 3 by leaving `CombinePerKey.with_hot_key_fanout` a no-op while the
pipeline is built: a local run has at most a few workers, where the fanout's
extra shuffle buys nothing. It changes only the order of a PCollection's
elements, which no Beam pipeline may rely on.

Two more sources live in the pipeline itself and are fixed there: batches are
cut at fixed sizes, never by BatchElements' timing-based tuning (TF rounds the
last elements of a batch differently), and spill files are named by a digest
of their bytes and spread by name (transforms.spill), not by random keys.

This is correctness (reproducible runs), not speed. There is no upstream issue:
Beam makes no promise of a stable order on any runner. It touches private
classes of Beam's FnApiRunner (ListBuffer, GroupingBuffer,
BundleContextManager). On a Beam release where they moved, it turns itself off
with one warning (pipeline.workarounds.guard): runs then agree to float rounding
(pipeline.compare_runs), not bit for bit. tests/test_preprocess_e2e.py runs the
whole job twice with two workers and compares the analysis and the examples bit
for bit. Distributed runners merge in an order of their own, so there results
agree with a local run to float rounding, not bit for bit. Inputs must arrive
alike too: CSV files are split by byte range, but a BigQuery read may hand rows
out in another order each time.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.workarounds.guard import (
    Patch,
    Workaround,
    missing_attributes,
    missing_in_source,
    missing_parameters,
)

_TIMERS_ATTRIBUTE = "_preprocess_timers"
_PENDING_ATTRIBUTE = "_preprocess_pending_chunks"


def _sort_list_buffer(buffer) -> None:
    # In place, before the buffer is first split or read; sorting an already
    # sorted list is linear, so repeated reads cost little. Timer buffers keep
    # their order: the runner applies timer sets and clears in that order.
    if buffer._grouped_output is None and not getattr(buffer, _TIMERS_ATTRIBUTE, False):
        buffer._inputs.sort()


def _marking_timer_buffers(original, split_buffer_id):
    def get_buffer(self, buffer_id, transform_id):
        buffer = original(self, buffer_id, transform_id)
        if split_buffer_id(buffer_id)[0] == "timers":
            setattr(buffer, _TIMERS_ATTRIBUTE, True)
        return buffer

    return get_buffer


def _ordered_list_partition(original):
    def partition(self, n):
        _sort_list_buffer(self)
        return original(self, n)

    return partition


def _ordered_list_iter(original):
    def __iter__(self):
        _sort_list_buffer(self)
        return original(self)

    return __iter__


def _deferred_grouping_append(self, elements_data: bytes) -> None:
    # Decoding waits for partition(), when every chunk has arrived.
    if self._grouped_output:
        raise RuntimeError("Grouping table append after read.")
    self.__dict__.setdefault(_PENDING_ATTRIBUTE, []).append(elements_data)


def _decode_pending(buffer, original_append) -> None:
    chunks = buffer.__dict__.pop(_PENDING_ATTRIBUTE, [])
    chunks.sort(reverse=True)
    while chunks:  # smallest first, each chunk freed once decoded
        original_append(buffer, chunks.pop())
    ordered = sorted(buffer._table.items(), key=lambda item: item[0])
    buffer._table.clear()
    buffer._table.update(ordered)


def _ordered_grouping_extend(original_extend, grouping_buffer_class):
    def extend(self, input_buffer):
        if isinstance(input_buffer, grouping_buffer_class):
            # Undecoded chunks join this buffer's own, to be sorted with them.
            pending = input_buffer.__dict__.get(_PENDING_ATTRIBUTE, [])
            self.__dict__.setdefault(_PENDING_ATTRIBUTE, []).extend(pending)
        return original_extend(self, input_buffer)

    return extend


def _ordered_grouping_partition(original_append, original_partition):
    def partition(self, n):
        _decode_pending(self, original_append)
        return original_partition(self, n)

    return partition


def _without_fanout(self, fanout):
    return self


class ReproducibleLocalRuns(Workaround):
    """Buffers of the FnApiRunner ordered by content, and no hot-key fanout."""

    name = "reproducible_runs"
    summary = "local runs reproduce themselves bit for bit"

    def missing_internals(self) -> list[str]:
        from apache_beam.runners.portability.fn_api_runner import execution, translations
        from apache_beam.transforms import core

        missing = missing_attributes(translations, ["split_buffer_id"])
        missing += missing_attributes(
            execution, ["ListBuffer", "GroupingBuffer", "BundleContextManager"]
        )
        missing += missing_attributes(core.CombinePerKey, ["with_hot_key_fanout"])
        if missing:
            return missing
        lists, groups = execution.ListBuffer, execution.GroupingBuffer
        contexts = execution.BundleContextManager
        missing += missing_attributes(lists, ["append", "partition", "__iter__"])
        missing += missing_attributes(groups, ["append", "extend", "partition"])
        missing += missing_parameters(lists.partition, ["self", "n"], "ListBuffer.partition")
        missing += missing_parameters(
            groups.append, ["self", "elements_data"], "GroupingBuffer.append"
        )
        missing += missing_parameters(
            contexts.get_buffer,
            ["self", "buffer_id", "transform_id"],
            "BundleContextManager.get_buffer",
        )
        # The replacements read and reorder these private attributes.
        missing += missing_in_source(
            lists.__init__, ["self._inputs", "self._grouped_output"], "ListBuffer.__init__"
        )
        missing += missing_in_source(
            groups.__init__, ["self._table", "self._grouped_output"], "GroupingBuffer.__init__"
        )
        return missing

    def patches(self) -> Sequence[Patch]:
        from apache_beam.runners.portability.fn_api_runner import execution, translations
        from apache_beam.transforms import core

        lists, groups = execution.ListBuffer, execution.GroupingBuffer
        contexts = execution.BundleContextManager
        return [
            Patch(lists, "partition", _ordered_list_partition(lists.partition)),
            Patch(lists, "__iter__", _ordered_list_iter(lists.__iter__)),
            Patch(
                contexts,
                "get_buffer",
                _marking_timer_buffers(contexts.get_buffer, translations.split_buffer_id),
            ),
            Patch(groups, "append", _deferred_grouping_append),
            Patch(groups, "extend", _ordered_grouping_extend(groups.extend, groups)),
            Patch(
                groups, "partition", _ordered_grouping_partition(groups.append, groups.partition)
            ),
            Patch(core.CombinePerKey, "with_hot_key_fanout", _without_fanout),
        ]
