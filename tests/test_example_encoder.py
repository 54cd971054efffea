"""transforms.example_encoder writes the examples that tfx-bsl's encoder writes:
parsed back, every row has the same features, kinds and values (the feature
order on the wire may differ, which a proto parser ignores)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.example_encoder import ExampleEncoder, encode_scalar_examples, varint

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _features(serialized: bytes) -> dict:
    """name -> (kind, values) of one example; floats as their float32 bit patterns,
    so that NaN compares equal to itself."""
    import tensorflow as tf

    example = tf.train.Example.FromString(serialized)
    features = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if kind == "float_list":
            values = np.array(values, np.float32).view(np.uint32).tolist()
        features[name] = (kind, values)
    return features


def _tfx_bsl(batch: pa.RecordBatch) -> list[bytes]:
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    return RecordBatchToExamplesEncoder().encode(batch)


def _assert_same_examples(ours: pa.Array, batch: pa.RecordBatch) -> None:
    reference = _tfx_bsl(batch)
    assert len(ours) == len(reference) == batch.num_rows
    for row, (mine, theirs) in enumerate(zip(ours.to_pylist(), reference, strict=True)):
        assert _features(mine) == _features(theirs), f"row {row}"


def _scalars(values: list, value_type: pa.DataType, large: bool = True) -> pa.Array:
    flat = pa.array(values, value_type)
    offsets = pa.array(np.arange(len(values) + 1), pa.int64() if large else pa.int32())
    array_class = pa.LargeListArray if large else pa.ListArray
    return array_class.from_arrays(offsets, flat)


def test_varint():
    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(128) == b"\x80\x01"
    assert varint(300) == b"\xac\x02"
    assert varint(2**64 - 1) == b"\xff" * 9 + b"\x01"


def test_scalar_features_of_every_kind_and_edge_value():
    ints = [0, 1, 127, 128, 16383, 16384, 2**31, -1, -128, INT64_MIN, INT64_MAX, 7]
    floats = [0.0, -0.0, 1.5, float("nan"), float("inf"), -float("inf"), 1e-45, 3.4e38]
    floats += [-2.5, 1e-3, 1e6, 7.0]
    texts = [b"", b"a", b"\xff\x00\xfe", b"x" * 127, b"y" * 128, b"z" * 20000, "é".encode()]
    texts += [b"k1", b"k2", b"k3", b"k4", b"k5"]
    long_name = "a_feature_name_longer_than_one_varint_byte_" * 4
    batch = pa.RecordBatch.from_arrays(
        [
            _scalars(ints, pa.int64()),
            _scalars(floats, pa.float32(), large=False),
            _scalars(texts, pa.large_binary()),
            _scalars(texts, pa.binary(), large=False),
            _scalars(ints, pa.int64()),
            _scalars([3] * 12, pa.int64()),
        ],
        names=["ints", "floats", "large_texts", "texts", long_name, "small_ints"],
    )
    ours = encode_scalar_examples(batch)
    assert ours is not None, "every column is scalar: the fast path must take it"
    _assert_same_examples(ours, batch)
    assert ExampleEncoder().encode(batch).equals(ours)


def test_a_sliced_batch():
    batch = pa.RecordBatch.from_arrays(
        [
            _scalars(list(range(300)), pa.int64()),
            _scalars([b"v%d" % i for i in range(300)], pa.binary()),
        ],
        names=["n", "s"],
    ).slice(17, 100)
    ours = encode_scalar_examples(batch)
    assert ours is not None
    _assert_same_examples(ours, batch)
    assert _features(ours[0].as_py()) == {"n": ("int64_list", [17]), "s": ("bytes_list", [b"v17"])}


@pytest.mark.parametrize(
    "column",
    [
        # an empty list, a list of two values, a null list, a null value
        pa.array([[1], [], [3]], pa.large_list(pa.int64())),
        pa.array([[1], [2, 3], [4]], pa.large_list(pa.int64())),
        pa.array([[1.0], None, [3.0]], pa.large_list(pa.float32())),
        pa.array([[b"a"], [None], [b"c"]], pa.large_list(pa.large_binary())),
    ],
    ids=["empty-list", "two-values", "null-list", "null-value"],
)
def test_other_batches_go_to_tfx_bsl(column):
    batch = pa.RecordBatch.from_arrays(
        [_scalars([5, 6, 7], pa.int64()), column], names=["scalar", "other"]
    )
    assert encode_scalar_examples(batch) is None
    _assert_same_examples(ExampleEncoder().encode(batch), batch)


@pytest.mark.parametrize("value_type", [pa.int32(), pa.float64()])
def test_types_tfx_bsl_rejects_are_rejected_as_before(value_type):
    batch = pa.RecordBatch.from_arrays([_scalars([1, 2, 3], value_type)], names=["other"])
    assert encode_scalar_examples(batch) is None
    with pytest.raises(RuntimeError, match="Bad field type"):
        ExampleEncoder().encode(batch)


def test_no_rows():
    batch = pa.RecordBatch.from_arrays([_scalars([], pa.int64())], names=["n"])
    assert len(ExampleEncoder().encode(batch)) == 0


@settings(max_examples=40, deadline=None)
@given(
    ints=st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=1, max_size=30),
    data=st.data(),
)
def test_random_scalar_batches_match_tfx_bsl(ints, data):
    rows = len(ints)
    floats = data.draw(st.lists(st.floats(width=32), min_size=rows, max_size=rows))
    texts = data.draw(st.lists(st.binary(max_size=300), min_size=rows, max_size=rows))
    # tfx-bsl reads column names as C strings: one holding NUL would clash.
    name = data.draw(st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=150))
    batch = pa.RecordBatch.from_arrays(
        [
            _scalars(ints, pa.int64()),
            _scalars(floats, pa.float32()),
            _scalars(texts, pa.large_binary()),
        ],
        names=[name, name + "_f", name + "_s"],
    )
    ours = encode_scalar_examples(batch)
    assert ours is not None
    _assert_same_examples(ours, batch)


def test_fixed_length_runs_of_every_kind():
    """Keys of one width, empty strings, small ints and floats make fixed-length
    entries, copied into one matrix per run; an int of two varint bytes in the
    middle ends a run."""
    rows = 50
    batch = pa.RecordBatch.from_arrays(
        [
            _scalars([b"key-%04d" % i for i in range(rows)], pa.large_binary()),
            _scalars([b""] * rows, pa.large_binary()),
            _scalars([i % 128 for i in range(rows)], pa.int64()),
            _scalars([i * 0.5 for i in range(rows)], pa.float32()),
            _scalars([1000 + i for i in range(rows)], pa.int64()),
            _scalars([i % 3 for i in range(rows)], pa.int64()),
        ],
        names=["key", "empty", "bucket", "value", "wide", "small"],
    )
    ours = encode_scalar_examples(batch)
    assert ours is not None
    _assert_same_examples(ours, batch)
    assert _features(ours[7].as_py()) == {
        "key": ("bytes_list", [b"key-0007"]),
        "empty": ("bytes_list", [b""]),
        "bucket": ("int64_list", [7]),
        "value": ("float_list", np.array([3.5], np.float32).view(np.uint32).tolist()),
        "wide": ("int64_list", [1007]),
        "small": ("int64_list", [1]),
    }
