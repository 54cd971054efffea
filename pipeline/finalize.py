"""Finishing a batch run once its pipeline has succeeded: reconcile the counts,
apply the run's policies, commit the staged outputs, write the manifest and the
report, print the summary.

Nothing here runs a pipeline. Every step reads files the pipeline wrote into
the run's staging directory (pipeline/layout.py names them), and any step may
refuse the run with RunFailed, in which case nothing is committed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from pipeline import commit
from pipeline import manifest as manifest_io
from pipeline.layout import RunLayout, raw_statistics_relpath, transformed_statistics_relpath
from pipeline.lifecycle import RunFailed, StopState
from pipeline.options import PreprocessOptions
from schemas.spec import DatasetSpec
from transforms.bigquery_source import BigQuerySource
from transforms.csv_source import CsvLayout
from transforms.record_keys import duplicate_keys_path


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    """What a finished run reports: its manifest and the report's path, if drawn."""

    manifest: dict
    report_path: str | None


def finalize_run(
    staged: RunLayout,
    root: str,
    options: PipelineOptions,
    spec: DatasetSpec,
    layouts: dict[str, CsvLayout],
    runner: str,
    started: float,
    stop_state: StopState,
) -> FinishedRun:
    """From a staged, successful pipeline to a committed run (see the module
    docstring). Checks `stop_state` between steps: a stop signal before the
    commit leaves nothing committed."""
    preprocess = options.view_as(PreprocessOptions)
    logging.info("phase: reconciling counts and committing the outputs")
    counts = reconcile_counts(manifest_io.read_json(staged.counts_path), spec.split_names)
    duplicate_keys = read_duplicate_keys(staged, spec)
    remove_scratch(staged, options.view_as(GoogleCloudOptions).temp_location)
    check_bad_fraction(counts, preprocess.max_bad_fraction, staged)
    write_raw_metadata(staged, spec)
    label_classes = run_label_classes(staged, spec)
    manifest_io.write_json(staged.spec_path, spec_document(spec))
    stop_state.check()
    anomalies = find_run_anomalies(staged, spec, preprocess.baseline_output_dir)
    if anomalies and preprocess.fail_on_anomalies:
        listed = "\n".join(f"  - {anomaly['message']}" for anomaly in anomalies)
        raise RunFailed(
            f"{len(anomalies)} anomalies and --fail_on_anomalies; nothing was "
            f"committed; the run's outputs are in {staged.root}:\n{listed}",
            keep_outputs=True,
        )
    stop_state.check()
    commit.commit(staged.root, root)
    manifest = write_manifest(
        RunLayout(root, staged.run_id),
        spec,
        layouts,
        counts,
        runner,
        started,
        BigQuerySource.from_flags(preprocess.input, preprocess.query),
        anomalies,
        duplicate_keys,
        label_classes,
    )
    commit.clear_staging_area(root)
    return FinishedRun(manifest, write_report(root))


def reconcile_counts(raw_counts: dict, split_names: Sequence[str]) -> dict:
    """Manifest counts from the pipeline's count records; raises RunFailed if they
    do not reconcile (every record read is a header, a dead letter or in a split)."""
    # Records read, under their source's kind (transforms.validation.ValidateInput).
    records = raw_counts.get("csv_lines", 0) + raw_counts.get("bigquery_rows", 0)
    header_lines = raw_counts.get("header_lines", 0)
    counts = {
        "read": records - header_lines,
        "header_lines": header_lines,
        "dead_letter": raw_counts.get("dead_letter", 0),
    }
    for split in split_names:
        counts[split] = raw_counts.get(split, 0)
    counts["valid"] = sum(counts[split] for split in split_names)
    # Among the dead letters: rows whose label class train never saw.
    counts["unseen_label_classes"] = raw_counts.get("unseen_label_classes", 0)
    if counts["read"] != counts["dead_letter"] + counts["valid"]:
        raise RunFailed(
            f"counts do not reconcile: read {counts['read']} != dead_letter "
            f"{counts['dead_letter']} + splits {counts['valid']}"
        )
    return counts


def read_duplicate_keys(staged: RunLayout, spec: DatasetSpec) -> dict | None:
    """The declared key's duplicates (transforms.record_keys.FindDuplicateKeys),
    None when there are none or the key is derived (unique by construction)."""
    if spec.derives_record_key:
        return None
    duplicates = manifest_io.read_json(duplicate_keys_path(staged))
    if not duplicates["count"]:
        return None
    examples = ", ".join(repr(example["key"]) for example in duplicates["examples"])
    logging.warning(
        "key_column %r is not unique: %d values are held by %d rows (e.g. %s); examples "
        "with these keys cannot be told apart by key",
        spec.key_column,
        duplicates["count"],
        duplicates["rows"],
        examples,
    )
    return duplicates


def check_bad_fraction(counts: dict, max_bad_fraction: float, staged: RunLayout) -> None:
    """The --max_bad_fraction policy; the dead letters stay staged for inspection."""
    bad_fraction = counts["dead_letter"] / counts["read"] if counts["read"] else 0.0
    if bad_fraction > max_bad_fraction:
        raise RunFailed(
            f"{counts['dead_letter']} of {counts['read']} rows ({bad_fraction:.2%}) "
            f"are dead letters, above --max_bad_fraction "
            f"{max_bad_fraction:.2%}; nothing was committed; see "
            f"{staged.dead_letter_prefix}*.jsonl for the reasons",
            keep_outputs=True,
        )


def remove_scratch(out: RunLayout, temp_location: str | None) -> None:
    """Deletes the run's counts file and tf.Transform temp files once they are used."""
    scratch = [out.counts_dir, out.temp_dir(temp_location)]
    FileSystems.delete([path for path in scratch if FileSystems.exists(path)])


def write_raw_metadata(out: RunLayout, spec: DatasetSpec) -> None:
    """OUTPUT/metadata/, where TFTransformOutput.raw_metadata looks for it."""
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    from transforms.preprocessing import raw_feature_spec

    metadata_io.write_metadata(
        dataset_metadata.DatasetMetadata.from_feature_spec(raw_feature_spec(spec)),
        out.raw_metadata_dir,
    )


def run_label_classes(out: RunLayout, spec: DatasetSpec) -> list[str] | None:
    """The label's class names in id order (transforms.preprocessing.label_classes);
    a binary label whose train classes are not two fails the run."""
    from transforms.preprocessing import LabelClassesError, label_classes, read_label_vocabulary

    try:
        return label_classes(spec, read_label_vocabulary(spec, out.root))
    except LabelClassesError as error:
        raise RunFailed(f"{error}; nothing was committed", keep_outputs=True) from None


def spec_document(spec: DatasetSpec) -> dict:
    """The spec as a document that schemas.spec.parse_spec reads back: the trainer
    and the serving model validate raw instances with it as the batch job did."""
    return spec.model_dump(mode="json", by_alias=True, exclude={"spec_hash"})


def find_run_anomalies(out: RunLayout, spec: DatasetSpec, baseline_dir: str | None) -> list:
    """Checks the run's statistics (pipeline/anomalies.py), against the
    statistics of `baseline_dir` for drift when it is given."""
    import tensorflow_transform as tft

    from pipeline.anomalies import AnomalyThresholds, find_anomalies

    raw = manifest_io.read_json(out.raw_statistics_path)
    transformed = {
        split: manifest_io.read_json(out.transformed_statistics_path(split))
        for split in spec.split_names
    }
    tft_output = tft.TFTransformOutput(out.root)
    vocabularies = {
        feature.name: tft_output.vocabulary_size_by_name(feature.name)
        for feature in spec.features
        if any(step.type == "vocabulary" for step in feature.transform)
    }
    scaled = [f.name for f in spec.features if f.transform[-1].type == "scale_to_0_1"]
    baseline = None
    if baseline_dir:
        baseline = {"raw": manifest_io.read_json(RunLayout(baseline_dir).raw_statistics_path)}
    return find_anomalies(
        raw, transformed, vocabularies, AnomalyThresholds.from_spec(spec), scaled, baseline
    )


def write_report(root: str) -> str | None:
    """OUTPUT/report.html; a failure to draw it is logged, not fatal: the run's
    outputs are committed and complete by then."""
    from pipeline.report import render_report

    try:
        return render_report(root)
    except Exception:
        logging.exception("could not write the run report; rebuild it with pipeline.report")
        return None


def write_manifest(
    out: RunLayout,
    spec: DatasetSpec,
    layouts: dict[str, CsvLayout],
    counts: dict,
    runner: str,
    started: float,
    bigquery: BigQuerySource | None = None,
    anomalies: list | None = None,
    duplicate_keys: dict | None = None,
    label_classes: list[str] | None = None,
) -> dict:
    """Writes manifest.json, the last file of a run; returns the manifest."""
    wall_seconds = time.time() - started
    splits = {
        split: {
            "count": counts[split],
            "percentage": spec.split.percentages[split],
            "shards": manifest_io.list_files(out.split_pattern(split)),
        }
        for split in spec.split_names
    }
    feature_kinds = spec.feature_kinds()
    document = {
        "manifest_version": manifest_io.MANIFEST_VERSION,
        "run_id": out.run_id,
        "dataset": spec.name,
        "spec_hash": spec.spec_hash,
        "inputs": _inputs_entry(layouts, bigquery),
        "key_column": spec.record_key,
        "record_key": "derived" if spec.derives_record_key else "declared",
        "timestamp_column": spec.timestamp_column,
        "aggregates": [_aggregate_entry(aggregate) for aggregate in spec.aggregates],
        "label": spec.label,
        "label_kind": spec.label_kind,
        "label_classes": label_classes,
        "unseen_label_classes": counts.get("unseen_label_classes", 0),
        "counts": counts,
        "splits": splits,
        "dead_letter_files": manifest_io.list_files(out.dead_letter_pattern),
        "raw_features_files": manifest_io.list_files(out.raw_features_pattern()),
        "features": {
            name: _feature_entry(spec, name, kind, cardinality, out)
            for name, (kind, cardinality) in feature_kinds.items()
        },
        "statistics": {
            "raw": raw_statistics_relpath(),
            "transformed": {
                split: transformed_statistics_relpath(split) for split in spec.split_names
            },
        },
        "anomalies": anomalies or [],
        # Only when a declared key turned out not to be unique.
        **({"duplicate_keys": duplicate_keys} if duplicate_keys else {}),
        "transform_fn_dir": out.transform_fn_dir,
        "transform_fn_fingerprint": manifest_io.directory_fingerprint(out.transform_fn_dir),
        "package_versions": manifest_io.package_versions(),
        "runner": runner,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(wall_seconds, 3),
        "rows_per_second": round(counts["read"] / wall_seconds, 1) if wall_seconds else None,
    }
    manifest_io.write_json(out.manifest_path, document)
    return document


def _inputs_entry(layouts: dict[str, CsvLayout], bigquery: BigQuerySource | None) -> list:
    if bigquery is not None:
        return [{"bigquery": bigquery.name, "query": bigquery.query}]
    return [
        {
            "path": layout.path,
            "size_bytes": layout.size_bytes,
            "has_header": layout.header is not None,
            "fingerprint": manifest_io.file_fingerprint(layout.path),
        }
        for layout in layouts.values()
    ]


def _aggregate_entry(aggregate) -> dict:
    return {
        "name": aggregate.name,
        "key": list(aggregate.key),
        "value": aggregate.value,
        "agg": aggregate.agg.value,
        "window_seconds": aggregate.window_seconds,
        "period_seconds": aggregate.period_seconds,
        "default": aggregate.default,
    }


def _feature_entry(spec: DatasetSpec, name: str, kind, cardinality, out: RunLayout) -> dict:
    feature = next(f for f in spec.features if f.name == name)
    entry = {"kind": kind.value, "cardinality": cardinality, "sources": feature.input_names}
    if any(step.type == "vocabulary" for step in feature.transform):
        import tensorflow_transform as tft

        entry["vocabulary_size"] = tft.TFTransformOutput(out.root).vocabulary_size_by_name(name)
    return entry


def print_summary(finished: FinishedRun) -> None:
    manifest = finished.manifest
    counts = manifest["counts"]
    splits = ", ".join(f"{name} {info['count']}" for name, info in manifest["splits"].items())
    shards = sum(len(info["shards"]) for info in manifest["splits"].values())
    print(
        f"read {counts['read']} rows: {counts['valid']} valid ({splits}), "
        f"{counts['dead_letter']} dead letters\n"
        f"{manifest['wall_seconds']:.1f} s, {manifest['rows_per_second']:.0f} rows/s on "
        f"{manifest['runner']}\n"
        f"outputs: {shards} TFRecord shards, transform_fn and manifest under "
        f"{manifest['transform_fn_dir'].rsplit('/', 1)[0]}"
    )
    anomalies = manifest.get("anomalies") or []
    print(f"anomalies: {len(anomalies)}" + "".join(f"\n  - {a['message']}" for a in anomalies))
    if finished.report_path:
        print(f"report: {finished.report_path}")
