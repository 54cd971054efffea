"""pipeline.workarounds.reproducible_runs: the local runner's buffers hand out the same
elements in the same places whatever order the workers' chunks arrived in.
The whole-job check (two default runs, byte-identical analysis and examples) is
in tests/test_preprocess_e2e.py."""

from __future__ import annotations

import itertools

import apache_beam as beam
import pytest
from apache_beam import coders
from apache_beam.coders.coder_impl import create_InputStream, create_OutputStream
from apache_beam.runners.portability.fn_api_runner import execution
from apache_beam.transforms import core, window

from pipeline.workarounds import reproducible_runs
from pipeline.workarounds.guard import applied
from pipeline.workarounds.reproducible_runs import ReproducibleLocalRuns

KV_CODER = coders.WindowedValueCoder(
    coders.TupleCoder([coders.StrUtf8Coder(), coders.VarIntCoder()]),
    coders.coders.GlobalWindowCoder(),
)
GROUPED_CODER = coders.WindowedValueCoder(
    coders.TupleCoder([coders.StrUtf8Coder(), coders.IterableCoder(coders.VarIntCoder())]),
    coders.coders.GlobalWindowCoder(),
)


def grouping_buffer() -> execution.GroupingBuffer:
    return execution.GroupingBuffer(KV_CODER, GROUPED_CODER, core.Windowing(window.GlobalWindows()))


@pytest.fixture
def ordered():
    with applied(ReproducibleLocalRuns()) as in_force:
        assert in_force
        yield


def chunk(pairs) -> bytes:
    """One data-channel chunk holding the (key, value) pairs."""
    stream = create_OutputStream()
    for pair in pairs:
        element = window.GlobalWindows.windowed_value(pair)
        KV_CODER.get_impl().encode_to_stream(element, stream, True)
    return stream.get()


def decode_grouped(parts) -> list[list]:
    decoded = []
    for part in parts:
        stream = create_InputStream(b"".join(part))
        values = []
        while stream.size() > 0:
            key, grouped = GROUPED_CODER.get_impl().decode_from_stream(stream, True).value
            values.append((key, list(grouped)))
        decoded.append(values)
    return decoded


# Chunks as two workers might send them: each worker's in its own order, the
# two interleaved however they arrive.
WORKER_CHUNKS = [
    chunk([("b", 1), ("a", 2)]),
    chunk([("c", 3), ("b", 4)]),
    chunk([("a", 5), ("d", 6)]),
    chunk([("b", 7)]),
]


def test_a_group_by_key_lists_keys_and_values_alike_for_every_arrival_order(ordered):
    results = []
    for arrival in itertools.permutations(WORKER_CHUNKS):
        buffer = grouping_buffer()
        for data in arrival:
            buffer.append(data)
        results.append(decode_grouped(buffer.partition(2)))
    assert all(result == results[0] for result in results)
    # Nothing lost or duplicated along the way.
    grouped = dict(itertools.chain.from_iterable(results[0]))
    assert {key: sorted(values) for key, values in grouped.items()} == {
        "a": [2, 5],
        "b": [1, 4, 7],
        "c": [3],
        "d": [6],
    }


def test_merging_grouping_buffers_keeps_the_order_independent_of_arrival(ordered):
    def merged(order):
        first, second = (grouping_buffer() for _ in range(2))
        for data in order[:2]:
            first.append(data)
        for data in order[2:]:
            second.append(data)
        first.extend(second)
        return decode_grouped(first.partition(1))

    assert merged(WORKER_CHUNKS) == merged(WORKER_CHUNKS[::-1])


def test_a_materialized_collection_splits_alike_for_every_arrival_order(ordered):
    splits = []
    for arrival in itertools.permutations(WORKER_CHUNKS):
        buffer = execution.ListBuffer(KV_CODER.get_impl())
        for data in arrival:
            buffer.append(data)
        splits.append((buffer.partition(2), list(buffer)))
    assert all(split == splits[0] for split in splits)
    assert sorted(itertools.chain.from_iterable(splits[0][0])) == sorted(WORKER_CHUNKS)


def transform_labels(pipeline) -> list[str]:
    proto = pipeline.to_runner_api()
    return [transform.unique_name for transform in proto.components.transforms.values()]


def build_fanned_combine() -> beam.Pipeline:
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([1.0, 2.0]) | beam.CombineGlobally(sum).with_fanout(4)
    return pipeline


def test_fanout_is_left_out_only_while_the_workaround_is_in_force():
    with applied(ReproducibleLocalRuns()):
        plain = build_fanned_combine()
    fanned = build_fanned_combine()
    assert not any("SplitHotCold" in label for label in transform_labels(plain))
    assert any("SplitHotCold" in label for label in transform_labels(fanned))


def test_the_patched_internals_are_present_in_the_pinned_beam():
    assert ReproducibleLocalRuns().missing_internals() == []


def test_without_the_workaround_arrival_order_shows_through():
    """The oracle for the tests above: Beam's own buffer keeps arrival order."""
    orders = set()
    for arrival in itertools.permutations(WORKER_CHUNKS):
        buffer = execution.ListBuffer(KV_CODER.get_impl())
        for data in arrival:
            buffer.append(data)
        orders.add(tuple(buffer))
    assert len(orders) > 1


def test_timer_buffers_keep_their_order(ordered):
    """The runner applies timer sets and clears in the order written."""
    from apache_beam.runners.portability.fn_api_runner import execution as runner_execution

    buffer = runner_execution.ListBuffer(KV_CODER.get_impl())
    setattr(buffer, reproducible_runs._TIMERS_ATTRIBUTE, True)
    arrival = list(reversed(sorted(WORKER_CHUNKS)))
    for data in arrival:
        buffer.append(data)
    assert list(buffer) == arrival


def test_overlapping_blocks_restore_the_original_once():
    original = core.CombinePerKey.__dict__["with_hot_key_fanout"]
    outer = applied(ReproducibleLocalRuns())
    inner = applied(ReproducibleLocalRuns())
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # out of order, as two threads might
    assert core.CombinePerKey.__dict__["with_hot_key_fanout"] is not original
    inner.__exit__(None, None, None)
    assert core.CombinePerKey.__dict__["with_hot_key_fanout"] is original
