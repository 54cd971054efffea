"""tf.Transform analyze-and-transform over Arrow RecordBatches (TFXIO format).

Validated rows arrive as flat Arrow batches (one nullable value per row and
column). `to_tfxio_batch` turns them into the list-of-values columns that
tf.Transform's TensorAdapter reads, plus a passthrough copy of the record key,
so no Python dict per row is ever built. The analysis runs on the train split
only, and the one resulting transform_fn transforms every split.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from schemas.spec import DatasetSpec
from transforms.progress import PhaseProgress

# tf.Transform refuses passthrough columns that are also graph inputs, and the key
# column is a raw column, so it travels under this name and gets its own back in
# the encoded examples.
PASSTHROUGH_KEY = "__record_key__"
# Output key of the transform_fn beside the split names (which cannot contain '[').
TRANSFORM_FN = "[transform_fn]"


def transformed_batches_key(split: str) -> str:
    """Output key of a split's transformed RecordBatches (for statistics)."""
    return f"[transformed]{split}"


def tfxio_arrow_schema(spec: DatasetSpec) -> pa.Schema:
    from transforms.validation import rows_schema

    fields = []
    for field in rows_schema(spec):
        value_type = _tfxio_value_type(field.type)
        fields.append(pa.field(field.name, pa.large_list(value_type)))
    key_type = _tfxio_value_type(rows_schema(spec).field(spec.key_column).type)
    fields.append(pa.field(PASSTHROUGH_KEY, pa.large_list(key_type)))
    return pa.schema(fields)


def _tfxio_value_type(arrow_type: pa.DataType) -> pa.DataType:
    if pa.types.is_floating(arrow_type):
        return pa.float32()
    if pa.types.is_string(arrow_type):
        return pa.large_binary()
    return arrow_type


def to_list_array(values: pa.Array, value_type: pa.DataType) -> pa.Array:
    """One-element lists, or empty lists where the value is null."""
    lengths = np.where(values.is_valid().to_numpy(zero_copy_only=False), 1, 0)
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = values.drop_null() if values.null_count else values
    return pa.LargeListArray.from_arrays(pa.array(offsets), flat.cast(value_type))


def to_tfxio_batch(batch: pa.RecordBatch, schema: pa.Schema, key_column: str) -> pa.RecordBatch:
    """Flat validated rows -> the TFXIO layout described by `schema`."""
    arrays = []
    for field in schema:
        source = key_column if field.name == PASSTHROUGH_KEY else field.name
        arrays.append(to_list_array(batch.column(source), field.type.value_type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def tensor_adapter_config(spec: DatasetSpec):
    """TensorAdapterConfig of the raw columns for tf.Transform."""
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

    from transforms.preprocessing import raw_feature_spec

    schema = schema_utils.schema_from_feature_spec(raw_feature_spec(spec))
    representations = tensor_representation_util.InferTensorRepresentationsFromSchema(schema)
    return tensor_adapter.TensorAdapterConfig(tfxio_arrow_schema(spec), representations)


class _EncodeExamplesDoFn(beam.DoFn):
    """(transformed RecordBatch, passthrough dict) -> the batch's serialized
    tf.train.Examples, as one list (transforms.tfrecords writes them a batch at a time).

    Each example carries the record key under the key column's own name.
    """

    def __init__(self, key_column: str):
        self._key_column = key_column

    def setup(self):
        from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

        self._encoder = RecordBatchToExamplesEncoder()
        self._progress = PhaseProgress("transform and encode")

    def process(self, element: tuple[pa.RecordBatch, dict]) -> Iterable[list[bytes]]:
        # tf.Transform appends passthrough columns of the batch's length to the
        # transformed batch itself; the dict only holds single-value passthroughs.
        batch, _ = element
        if PASSTHROUGH_KEY not in batch.schema.names:
            raise ValueError(f"transformed batch lacks the record key column {PASSTHROUGH_KEY}")
        names = [self._key_column if n == PASSTHROUGH_KEY else n for n in batch.schema.names]
        self._progress.add(batch.num_rows)
        yield self._encoder.encode(batch.rename_columns(names))


class _SpillBatchesDoFn(beam.DoFn):
    """RecordBatches -> at the end of each bundle, the path of one Arrow IPC stream
    file in `directory` holding all the bundle's batches (no output for an empty
    bundle). Files are named uniquely, so a retried bundle never overwrites the
    file of a bundle that succeeded; only the paths that are output get read.
    """

    def __init__(self, directory: str):
        self._directory = directory

    def start_bundle(self):
        self._path = self._handle = self._writer = None

    def process(self, batch: pa.RecordBatch) -> Iterable:
        if self._writer is None:
            self._path = FileSystems.join(self._directory, f"{uuid.uuid4().hex}.arrows")
            self._handle = FileSystems.create(self._path)
            self._writer = pa.ipc.new_stream(self._handle, batch.schema)
        self._writer.write_batch(batch)
        return ()

    def finish_bundle(self):
        if self._writer is None:
            return
        self._writer.close()
        self._handle.close()
        yield GlobalWindows.windowed_value(self._path)


def read_spilled_batches(path: str) -> Iterable[pa.RecordBatch]:
    """The RecordBatches of one file written by _SpillBatchesDoFn."""
    with FileSystems.open(path) as handle:
        yield from pa.ipc.open_stream(handle)


class SpillToFiles(beam.PTransform):
    """PCollection[pa.RecordBatch] -> the same batches, read back from files.

    Why: the transform phase needs the transform_fn, which exists only once the
    analysis has seen every train row. Until then a runner must keep the rows
    somewhere, and the local runners keep them in memory, so memory grew with
    the input. Written once as Arrow IPC files under `directory` (cheap to write
    and read, and visible to every worker when `directory` is), the rows cost
    disk instead, and peak memory stays flat.
    """

    def __init__(self, directory: str):
        super().__init__()
        self._directory = directory

    def expand(self, batches):
        return (
            batches
            | "WriteSpills" >> beam.ParDo(_SpillBatchesDoFn(self._directory))
            | "SpreadSpills" >> beam.Reshuffle()
            | "ReadSpills" >> beam.FlatMap(read_spilled_batches)
        )


class AnalyzeAndTransform(beam.PTransform):
    """Analyzes the train split and transforms every split with one transform_fn.

    Input: dict {split: PCollection[pa.RecordBatch]} of validated flat rows.
    Output: dict {split: PCollection[list[bytes]]} of serialized transformed
    examples, one list per batch, {transformed_batches_key(split):
    PCollection[pa.RecordBatch]} of the transformed features (the record key
    included, as PASSTHROUGH_KEY),
    plus {TRANSFORM_FN: the transform_fn} for tft_beam.WriteTransformFn.
    tf.Transform's temp files go to `temp_dir`, which must be visible to every
    worker (a path under the output or --temp_location, never a local mkdtemp).
    """

    def __init__(self, spec: DatasetSpec, temp_dir: str, analyze_split: str = "train"):
        super().__init__()
        if analyze_split not in spec.split_names:
            raise ValueError(f"analyze split {analyze_split!r} is not one of {spec.split_names}")
        self._spec = spec
        self._temp_dir = temp_dir
        self._analyze_split = analyze_split

    def expand(self, splits: dict):
        import tensorflow_transform.beam as tft_beam

        from transforms.preprocessing import make_preprocessing_fn

        spec = self._spec
        config = tensor_adapter_config(spec)
        schema = config.arrow_schema
        analyze_input = splits[self._analyze_split] | f"ToTfxio[{self._analyze_split}]" >> (
            beam.Map(to_tfxio_batch, schema, spec.key_column)
        )
        transform_inputs = {
            split: batches
            | f"Spill[{split}]" >> SpillToFiles(FileSystems.join(self._temp_dir, "spill", split))
            | f"SpilledToTfxio[{split}]" >> beam.Map(to_tfxio_batch, schema, spec.key_column)
            for split, batches in splits.items()
        }
        with tft_beam.Context(temp_dir=self._temp_dir, passthrough_keys={PASSTHROUGH_KEY}):
            transform_fn = (
                analyze_input,
                config,
            ) | f"Analyze[{self._analyze_split}]" >> tft_beam.AnalyzeDataset(
                make_preprocessing_fn(spec)
            )
            examples = {}
            for split, batches in transform_inputs.items():
                transformed, _ = ((batches, config), transform_fn) | f"Transform[{split}]" >> (
                    tft_beam.TransformDataset(output_record_batches=True)
                )
                examples[split] = transformed | f"Encode[{split}]" >> beam.ParDo(
                    _EncodeExamplesDoFn(spec.key_column)
                )
                examples[transformed_batches_key(split)] = transformed | (
                    f"TransformedBatches[{split}]" >> beam.Map(lambda element: element[0])
                )
        return {**examples, TRANSFORM_FN: transform_fn}
