"""The transform graph of a batch run, applied to live rows: each row becomes
the tf.train.Example that the batch job writes for the same row."""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from schemas.spec import DatasetSpec
from transforms.admission import METRICS_NAMESPACE
from transforms.validation import rows_schema


def _any_batch_size(tensor):
    """The tensor's TypeSpec with its batch dimension unknown, as the converter needs."""
    import tensorflow as tf

    if isinstance(tensor, tf.SparseTensor):
        return tf.SparseTensorSpec([None, *tensor.shape[1:]], tensor.dtype)
    if isinstance(tensor, tf.RaggedTensor):
        return tf.RaggedTensorSpec(
            [None, *tensor.shape[1:]], tensor.dtype, tensor.ragged_rank, tensor.row_splits.dtype
        )
    return tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype)


class _TransformRowsDoFn(beam.DoFn):
    """Batch of row dicts (raw columns and aggregates) -> (record key, serialized
    tf.train.Example) through the transform graph of a batch run.

    Rows are converted exactly as the batch pipeline converts them (the same
    TFXIO layout and TensorAdapter), and outputs are encoded with the same
    example encoder (transforms.example_encoder), so an example written here
    is the example batch writes for the same row.
    """

    def __init__(self, spec: DatasetSpec, transform_dir: str):
        self._spec = spec
        self._transform_dir = transform_dir
        self._examples = Metrics.counter(METRICS_NAMESPACE, "examples_transformed")

    def setup(self):
        import tensorflow_transform as tft
        from tfx_bsl.tfxio import tensor_adapter

        from transforms.analyze import tensor_adapter_config
        from transforms.example_encoder import ExampleEncoder

        config = tensor_adapter_config(self._spec)
        self._tft_output = tft.TFTransformOutput(self._transform_dir)
        self._adapter = tensor_adapter.TensorAdapter(config)
        self._tfxio_schema = config.arrow_schema
        self._rows_schema = rows_schema(self._spec)
        self._encoder = ExampleEncoder()
        self._converter = None

    def process(self, rows: list[dict]) -> Iterable[tuple[str, bytes]]:
        from tfx_bsl.tfxio import tensor_to_arrow

        from transforms.analyze import passthrough_sources, to_list_array, to_tfxio_batch

        if not rows:
            return
        key_column = self._spec.record_key
        batch = pa.RecordBatch.from_pylist(rows, schema=self._rows_schema)
        tensors = self._adapter.ToBatchTensors(
            to_tfxio_batch(batch, self._tfxio_schema, passthrough_sources(self._spec)),
            produce_eager_tensors=True,
        )
        transformed = self._tft_output.transform_raw_features(tensors, drop_unused_features=True)
        if self._converter is None:
            self._converter = tensor_to_arrow.TensorsToRecordBatchConverter(
                {name: _any_batch_size(tensor) for name, tensor in transformed.items()}
            )
        output = self._converter.convert(transformed)
        keys = batch.column(key_column)
        output = output.append_column(key_column, to_list_array(keys, pa.large_binary()))
        encoded = self._encoder.encode(output).to_pylist()
        self._examples.inc(len(encoded))
        yield from zip(keys.to_pylist(), encoded, strict=True)


class ApplyTransformGraph(beam.PTransform):
    """PCollection[dict] of rows with aggregates -> (record key, serialized example).

    Keeps the input's windows. The transform graph is loaded once per worker, in
    setup(). Counter: examples_transformed.
    """

    def __init__(self, spec: DatasetSpec, transform_dir: str, batch_size: int = 256):
        super().__init__()
        self._spec = spec
        self._transform_dir = transform_dir
        self._batch_size = batch_size

    def expand(self, rows):
        return (
            rows
            | "BatchRows" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._batch_size)
            | "Transform" >> beam.ParDo(_TransformRowsDoFn(self._spec, self._transform_dir))
        )
