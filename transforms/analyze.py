"""tf.Transform analyze-and-transform over Arrow RecordBatches (TFXIO format).

Validated rows arrive as flat Arrow batches (one nullable value per row and
column). `to_tfxio_batch` turns them into the list-of-values columns that
tf.Transform's TensorAdapter reads, plus a passthrough copy of the record key,
so no Python dict per row is ever built. The analysis runs on the train split
only, and the one resulting transform_fn transforms every split, all splits in
one pass: each row carries its split's index through tf.Transform as a second
passthrough column, and the transformed batches are partitioned by it again.

A label with classes (multiclass, or binary with a positive_class) gets its
classes from train; a row of another split whose class train never saw cannot
be trained or scored on, so it becomes a dead letter naming the class (its raw
label travels as a third passthrough column, LABEL_PASSTHROUGH, for that).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.spec import DatasetSpec
from transforms.progress import PhaseProgress
from transforms.records import DEAD_LETTER_TAG, dead_letter
from transforms.spill import ReadSpillFiles, WriteSpillFiles
from transforms.validation import METRICS_NAMESPACE

# tf.Transform refuses passthrough columns that are also graph inputs, and the key
# column is a raw column, so it travels under this name and gets its own back in
# the encoded examples.
PASSTHROUGH_KEY = "__passthrough_key__"
# The split index (position in spec.split_names) of each row, carried through the
# transform like the key, so one transform stage serves every split: each stage
# costs a transform_fn load and a runner round trip, which dominated small splits.
SPLIT_COLUMN = "__split__"
# The raw label of every row, for the dead letter of a class train never saw;
# a passthrough for the same reason as the key.
LABEL_PASSTHROUGH = "__raw_label__"
# Counter (namespace 'input', like the validator's) of those dead letters, and
# their key in the run's counts.
UNSEEN_LABEL_CLASSES = "unseen_label_classes"
# Rows per batch into the transform. Each batch costs a TF graph call whatever its
# size, and splitting rows leaves small eval and test batches, which transformed
# at half the rows/s of train; rows of all splits share batches here.
TRANSFORM_BATCH_ROWS = 8192


class AnalyzeAndTransformResult(NamedTuple):
    """What AnalyzeAndTransform outputs.

    A NamedTuple because Beam tags a composite's outputs with a namedtuple's
    field names, looking into dicts too (get_named_nested_pvalues in
    apache_beam/transforms/ptransform.py): the tags are transform_fn,
    examples.<split> and transformed_batches.<split>. Beam does not look into a
    dataclass, so its PCollections would not be registered as outputs.
    """

    # tft_beam.AnalyzeDataset's (PCollection of the saved graph's directory,
    # metadata), for tft_beam.WriteTransformFn.
    transform_fn: tuple
    # {split: PCollection[pa.Array]} of serialized transformed examples, one
    # binary array per batch (for transforms.tfrecords.WriteTFRecordBatches).
    examples: dict[str, beam.PCollection]
    # {split: PCollection[pa.RecordBatch]} of the transformed features, the record
    # key included as PASSTHROUGH_KEY (for statistics). Rows that became dead
    # letters are not in them: count a split's rows here.
    transformed_batches: dict[str, beam.PCollection]
    # PCollection[dict] of dead letters (transforms.records.dead_letter): the rows
    # whose label class train never saw (always empty for a label without classes).
    dead_letter: beam.PCollection


def tfxio_arrow_schema(spec: DatasetSpec, with_split: bool = False) -> pa.Schema:
    """The TFXIO layout of validated rows, plus the record key passthrough and, with
    `with_split`, the SPLIT_COLUMN passthrough (the batch job's; streaming has no splits)."""
    from transforms.validation import rows_schema

    fields = []
    rows = rows_schema(spec)
    for field in rows:
        fields.append(pa.field(field.name, pa.large_list(_tfxio_value_type(field.type))))
    for name, source in passthrough_sources(spec).items():
        value_type = _tfxio_value_type(rows.field(source).type)
        fields.append(pa.field(name, pa.large_list(value_type)))
    if with_split:
        fields.append(pa.field(SPLIT_COLUMN, pa.large_list(pa.int64())))
    return pa.schema(fields)


def passthrough_sources(spec: DatasetSpec) -> dict[str, str]:
    """Passthrough column -> the validated rows' column it copies."""
    sources = {PASSTHROUGH_KEY: spec.record_key}
    if spec.label_has_classes:
        sources[LABEL_PASSTHROUGH] = spec.label
    return sources


def _tfxio_value_type(arrow_type: pa.DataType) -> pa.DataType:
    if pa.types.is_floating(arrow_type):
        return pa.float32()
    if pa.types.is_string(arrow_type):
        return pa.large_binary()
    return arrow_type


def to_list_array(values: pa.Array, value_type: pa.DataType) -> pa.Array:
    """One-element lists, or empty lists where the value is null."""
    if not values.null_count:
        offsets = np.arange(len(values) + 1, dtype=np.int64)
        return pa.LargeListArray.from_arrays(pa.array(offsets), values.cast(value_type))
    lengths = np.where(values.is_valid().to_numpy(zero_copy_only=False), 1, 0)
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeListArray.from_arrays(pa.array(offsets), values.drop_null().cast(value_type))


def to_tfxio_batch(
    batch: pa.RecordBatch, schema: pa.Schema, passthrough: dict[str, str]
) -> pa.RecordBatch:
    """Flat validated rows -> the TFXIO layout described by `schema`, each
    passthrough column copying its source (see passthrough_sources; a
    SPLIT_COLUMN in `schema` is read from the batch's own, see with_split_index)."""
    arrays = []
    for field in schema:
        source = passthrough.get(field.name, field.name)
        arrays.append(to_list_array(batch.column(source), field.type.value_type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def with_split_index(batch: pa.RecordBatch, index: int) -> pa.RecordBatch:
    """The batch with a SPLIT_COLUMN holding `index` on every row."""
    return batch.append_column(SPLIT_COLUMN, pa.array(np.full(batch.num_rows, index, np.int64)))


def split_indices(batch: pa.RecordBatch) -> np.ndarray:
    """The split index of every row of a transformed batch (its SPLIT_COLUMN)."""
    column = batch.column(batch.schema.get_field_index(SPLIT_COLUMN))
    if column.null_count or len(column.flatten()) != batch.num_rows:
        raise ValueError(f"{SPLIT_COLUMN} must hold exactly one split index per row")
    return column.flatten().to_numpy(zero_copy_only=False)


def unseen_label_rows(batch: pa.RecordBatch, label: str) -> np.ndarray:
    """Per row of a transformed batch: whether its label is UNSEEN_LABEL, a class
    that train never saw (transforms.preprocessing.transform_label)."""
    from transforms.preprocessing import UNSEEN_LABEL

    values = batch.column(batch.schema.get_field_index(label)).flatten()
    if len(values) != batch.num_rows:
        raise ValueError(f"the transformed label {label} must hold one value per row")
    return values.to_numpy(zero_copy_only=False) == UNSEEN_LABEL


def unseen_label_dead_letters(
    batch: pa.RecordBatch, unseen: np.ndarray, label: str, split: str
) -> list[dict]:
    """The dead letters of the `unseen` rows of a transformed batch of `split`,
    named by their record key and raw label (the passthrough columns)."""
    keys = batch.column(batch.schema.get_field_index(PASSTHROUGH_KEY)).flatten()
    classes = batch.column(batch.schema.get_field_index(LABEL_PASSTHROUGH)).flatten()
    letters = []
    for index in np.flatnonzero(unseen):
        key, label_class = _text(keys[index].as_py()), _text(classes[index].as_py())
        letters.append(
            dead_letter(
                f"{split} split, record key {key}",
                "",
                f"{label}: class {label_class!r} was not seen in train (the label's classes "
                "are those of train)",
                label,
            )
        )
    return letters


def _text(value) -> str:
    return (
        value.decode("utf-8", errors="backslashreplace") if isinstance(value, bytes) else str(value)
    )


class _PartitionBySplitDoFn(beam.DoFn):
    """(transformed RecordBatch, passthrough dict) -> the batch's rows of each split,
    without SPLIT_COLUMN, on the output tagged with the split's name.

    With a `label` that has classes, the rows whose class train never saw go to
    the DEAD_LETTER_TAG output instead (one dict each), counted by the counter
    UNSEEN_LABEL_CLASSES, and LABEL_PASSTHROUGH is dropped too.
    """

    def __init__(self, split_names: list[str], label: str | None = None):
        self._split_names = split_names
        self._label = label
        self._unseen = Metrics.counter(METRICS_NAMESPACE, UNSEEN_LABEL_CLASSES)

    def process(self, element: tuple[pa.RecordBatch, dict]) -> Iterable:
        batch, _ = element
        indices = split_indices(batch)
        if self._label is not None:
            unseen = unseen_label_rows(batch, self._label)
            if unseen.any():
                for index in np.unique(indices[unseen]):
                    split = self._split_names[int(index)]
                    letters = unseen_label_dead_letters(
                        batch, unseen & (indices == index), self._label, split
                    )
                    self._unseen.inc(len(letters))
                    for letter in letters:
                        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
                batch, indices = batch.filter(pa.array(~unseen)), indices[~unseen]
            batch = batch.drop_columns([LABEL_PASSTHROUGH])
        batch = batch.drop_columns([SPLIT_COLUMN])
        present = np.unique(indices)
        for index in present:
            # A spill file holds one split, so a batch mostly does: no copy then.
            rows = batch if len(present) == 1 else batch.filter(pa.array(indices == index))
            yield beam.pvalue.TaggedOutput(self._split_names[int(index)], rows)


def tensor_adapter_config(spec: DatasetSpec, with_split: bool = False):
    """TensorAdapterConfig of the raw columns for tf.Transform (see tfxio_arrow_schema)."""
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

    from transforms.preprocessing import raw_feature_spec

    schema = schema_utils.schema_from_feature_spec(raw_feature_spec(spec))
    representations = tensor_representation_util.InferTensorRepresentationsFromSchema(schema)
    return tensor_adapter.TensorAdapterConfig(tfxio_arrow_schema(spec, with_split), representations)


class _EncodeExamplesDoFn(beam.DoFn):
    """Transformed RecordBatch -> the batch's serialized tf.train.Examples, as one
    Arrow binary array (transforms.tfrecords writes them a batch at a time).

    Each example carries the record key under the key column's own name.
    """

    def __init__(self, key_column: str):
        self._key_column = key_column

    def setup(self):
        from transforms.example_encoder import ExampleEncoder

        self._encoder = ExampleEncoder()
        self._progress = PhaseProgress.shared("transform and encode")

    def process(self, batch: pa.RecordBatch) -> Iterable[pa.Array]:
        if PASSTHROUGH_KEY not in batch.schema.names:
            raise ValueError(f"transformed batch lacks the record key column {PASSTHROUGH_KEY}")
        names = [self._key_column if n == PASSTHROUGH_KEY else n for n in batch.schema.names]
        self._progress.add(batch.num_rows)
        yield self._encoder.encode(batch.rename_columns(names))


def _concat_batches(batches: list[pa.RecordBatch]) -> Iterable[pa.RecordBatch]:
    # BatchElements emits an empty list before an element larger than its maximum.
    if batches:
        yield batches[0] if len(batches) == 1 else pa.concat_batches(batches)


class RebatchRows(beam.PTransform):
    """PCollection[pa.RecordBatch] -> the same rows in batches of up to `rows` rows
    (as many whole input batches as fit); one schema throughout.

    The size is fixed rather than left to BatchElements' timing-based tuning:
    TF kernels round the last few elements of a batch differently from the
    rest (vectorized vs scalar math), so batches that change with timing would
    change transformed values in their last bit from run to run."""

    def __init__(self, rows: int):
        super().__init__()
        self._rows = rows

    def expand(self, batches):
        return (
            batches
            | "Batch"
            >> beam.BatchElements(
                min_batch_size=self._rows,
                max_batch_size=self._rows,
                element_size_fn=lambda batch: batch.num_rows,
            )
            | "Concat" >> beam.FlatMap(_concat_batches)
        )


class AnalyzeAndTransform(beam.PTransform):
    """Analyzes the train split and transforms every split with one transform_fn.

    Input: dict {split: PCollection[pa.RecordBatch]} of validated flat rows.
    Output: an AnalyzeAndTransformResult: the transform_fn, and per split the
    serialized transformed examples and the transformed RecordBatches.
    tf.Transform's temp files go to `temp_dir`, which must be visible to every
    worker (a path under the output or --temp_location, never a local mkdtemp).
    """

    def __init__(
        self,
        spec: DatasetSpec,
        temp_dir: str,
        analyze_split: str = "train",
        transform_batch_rows: int = TRANSFORM_BATCH_ROWS,
    ):
        super().__init__()
        self._transform_batch_rows = transform_batch_rows
        if analyze_split not in spec.split_names:
            raise ValueError(f"analyze split {analyze_split!r} is not one of {spec.split_names}")
        self._spec = spec
        self._temp_dir = temp_dir
        self._analyze_split = analyze_split

    def expand(self, splits: dict) -> AnalyzeAndTransformResult:
        import tensorflow_transform.beam as tft_beam

        from transforms.preprocessing import make_preprocessing_fn

        spec = self._spec
        config = tensor_adapter_config(spec, with_split=True)
        schema = config.arrow_schema
        split_names = list(splits)
        tagged = {
            split: batches | f"TagSplit[{split}]" >> beam.Map(with_split_index, index)
            for index, (split, batches) in enumerate(splits.items())
        }
        passthrough_columns = passthrough_sources(spec)
        analyze_input = tagged[self._analyze_split] | f"ToTfxio[{self._analyze_split}]" >> (
            beam.Map(to_tfxio_batch, schema, passthrough_columns)
        )
        # Every split waits for the analysis in spill files, and all go through one
        # transform stage. The paths are flattened, not the rows (see WriteSpillFiles).
        spill_dir = FileSystems.join(self._temp_dir, "spill")
        transform_input = (
            [
                batches | f"Spill[{split}]" >> WriteSpillFiles(spill_dir)
                for split, batches in tagged.items()
            ]
            | "FlattenSpills" >> beam.Flatten()
            | "ReadSpills" >> ReadSpillFiles()
            | "Rebatch" >> RebatchRows(self._transform_batch_rows)
            | "SpilledToTfxio" >> beam.Map(to_tfxio_batch, schema, passthrough_columns)
        )
        passthrough = {*passthrough_columns, SPLIT_COLUMN}
        with tft_beam.Context(temp_dir=self._temp_dir, passthrough_keys=passthrough):
            transform_fn = (
                analyze_input,
                config,
            ) | f"Analyze[{self._analyze_split}]" >> tft_beam.AnalyzeDataset(
                make_preprocessing_fn(spec)
            )
            transformed, _ = ((transform_input, config), transform_fn) | "Transform" >> (
                tft_beam.TransformDataset(output_record_batches=True)
            )
        label = spec.label if spec.label_has_classes else None
        by_split = transformed | "PartitionBySplit" >> beam.ParDo(
            _PartitionBySplitDoFn(split_names, label)
        ).with_outputs(DEAD_LETTER_TAG, *split_names)
        examples = {
            split: by_split[split]
            | f"Encode[{split}]" >> beam.ParDo(_EncodeExamplesDoFn(spec.record_key))
            for split in split_names
        }
        return AnalyzeAndTransformResult(
            transform_fn=transform_fn,
            examples=examples,
            transformed_batches={split: by_split[split] for split in split_names},
            dead_letter=by_split[DEAD_LETTER_TAG],
        )
