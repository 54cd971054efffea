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

`ordered_local_buffers()` fixes 1 and 2 in the runner's process: output chunks
are sorted by their bytes before they are split or grouped, and a GroupByKey's
keys by their encoded bytes. A chunk holds whole elements (an SDK worker
flushes only between elements, and only by size, unless the experiment
data_buffer_time_limit_ms turns on flushing by time), and a worker's chunks
depend only on its input, so sorted order is a function of the data. The cost
is a sort of chunk references, not of rows. Timer buffers keep their order,
which the runner relies on.

`without_hot_key_fanout()` fixes 3 while a pipeline is built: a local run has at
most a few workers, where the fanout's extra shuffle buys nothing.

Two more sources live in the pipeline itself and are fixed there: batches are
cut at fixed sizes, never by BatchElements' timing-based tuning (TF rounds the
last elements of a batch differently), and spill files are named by a digest
of their bytes and spread by name (transforms.spill), not by random keys.

Both functions touch private classes of Beam's FnApiRunner (apache-beam is
pinned in constraints.txt); `check_supported()` fails loudly if a Beam upgrade
renames the methods or attributes they use, though not if one changes what
they mean. tests/test_preprocess_e2e.py runs the whole job twice with two
workers and compares the analysis and the examples bit for bit. Distributed
runners merge in an order of their own, so there results agree with a local
run to float rounding (pipeline.compare_runs), not bit for bit. Inputs must
arrive alike too: CSV files are split by byte range, but a BigQuery read may
hand rows out in another order each time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from apache_beam.runners.portability.fn_api_runner import execution
from apache_beam.runners.portability.fn_api_runner.translations import split_buffer_id
from apache_beam.transforms import core

_PATCH_LOCK = threading.Lock()
_PATCHED_ATTRIBUTE = "_preprocess_ordered"
_TIMERS_ATTRIBUTE = "_preprocess_timers"


def check_supported() -> None:
    """Raises RuntimeError if the runner internals patched here have moved: the
    methods replaced and the private attributes the replacements use."""
    missing = [
        f"{owner.__name__}.{name}"
        for owner, names in (
            (execution.ListBuffer, ("append", "partition", "__iter__", "copy")),
            (execution.GroupingBuffer, ("append", "extend", "partition")),
            (execution.BundleContextManager, ("get_buffer",)),
            (core.CombinePerKey, ("with_hot_key_fanout",)),
        )
        for name in names
        if not hasattr(owner, name)
    ]
    lists = execution.ListBuffer(None)
    missing += [
        f"ListBuffer.{name}" for name in ("_inputs", "_grouped_output") if not hasattr(lists, name)
    ]
    # A GroupingBuffer needs coders to be built; its __init__ must still set
    # the attributes the patched methods use.
    init_source = _source_of(execution.GroupingBuffer.__init__)
    missing += [
        f"GroupingBuffer.{name}"
        for name in ("_table", "_grouped_output")
        if f"self.{name}" not in init_source
    ]
    if missing:
        raise RuntimeError(
            "this apache-beam release lacks the local-runner internals that make local "
            f"runs reproducible ({', '.join(missing)}); install the version pinned in "
            "constraints.txt"
        )


def _source_of(function) -> str:
    import inspect

    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def _sort_list_buffer(buffer) -> None:
    # In place, before the buffer is first split or read; sorting an already
    # sorted list is linear, so repeated reads cost little. Timer buffers keep
    # their order: the runner applies timer sets and clears in that order.
    if buffer._grouped_output is None and not getattr(buffer, _TIMERS_ATTRIBUTE, False):
        buffer._inputs.sort()


def _marking_timer_buffers(original):
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
    self.__dict__.setdefault("_pending_chunks", []).append(elements_data)


def _decode_pending(buffer, original_append) -> None:
    chunks = buffer.__dict__.pop("_pending_chunks", [])
    chunks.sort(reverse=True)
    while chunks:  # smallest first, each chunk freed once decoded
        original_append(buffer, chunks.pop())
    ordered = sorted(buffer._table.items(), key=lambda item: item[0])
    buffer._table.clear()
    buffer._table.update(ordered)


def _ordered_grouping_extend(original_extend):
    def extend(self, input_buffer):
        if isinstance(input_buffer, execution.GroupingBuffer):
            # Undecoded chunks join this buffer's own, to be sorted with them.
            pending = input_buffer.__dict__.get("_pending_chunks", [])
            self.__dict__.setdefault("_pending_chunks", []).extend(pending)
        return original_extend(self, input_buffer)

    return extend


def _ordered_grouping_partition(original_append, original_partition):
    def partition(self, n):
        _decode_pending(self, original_append)
        return original_partition(self, n)

    return partition


def ordered_local_buffers() -> None:
    """Makes the FnApiRunner in this process split and group stage outputs in an
    order that depends only on their contents. Idempotent; stays in force for
    the life of the process. It changes only the order of a PCollection's
    elements, which no Beam pipeline may rely on; timers keep theirs."""
    check_supported()
    with _PATCH_LOCK:
        if getattr(execution.ListBuffer, _PATCHED_ATTRIBUTE, False):
            return
        lists, groups = execution.ListBuffer, execution.GroupingBuffer
        lists.partition = _ordered_list_partition(lists.partition)
        lists.__iter__ = _ordered_list_iter(lists.__iter__)
        contexts = execution.BundleContextManager
        contexts.get_buffer = _marking_timer_buffers(contexts.get_buffer)
        append, extend, partition = groups.append, groups.extend, groups.partition
        groups.append = _deferred_grouping_append
        groups.extend = _ordered_grouping_extend(extend)
        groups.partition = _ordered_grouping_partition(append, partition)
        setattr(lists, _PATCHED_ATTRIBUTE, True)


_fanout_depth = 0
_original_fanout = None


@contextlib.contextmanager
def without_hot_key_fanout() -> Iterator[None]:
    """While active, CombinePerKey.with_hot_key_fanout (and so
    CombineGlobally.with_fanout) leaves the combine as it is. Use it around the
    construction of a pipeline for the local runner only. It changes a class
    attribute, so a pipeline built in another thread meanwhile loses its fanout
    too; nested and overlapping uses restore the original once, at the end."""
    global _fanout_depth, _original_fanout
    check_supported()
    with _PATCH_LOCK:
        if _fanout_depth == 0:
            _original_fanout = core.CombinePerKey.__dict__["with_hot_key_fanout"]
            core.CombinePerKey.with_hot_key_fanout = lambda self, fanout: self
        _fanout_depth += 1
    try:
        yield
    finally:
        with _PATCH_LOCK:
            _fanout_depth -= 1
            if _fanout_depth == 0:
                core.CombinePerKey.with_hot_key_fanout = _original_fanout
