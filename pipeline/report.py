"""The run report: one static HTML page describing a preprocessing run.

    python -m pipeline.report --output_dir OUT

reads OUT/manifest.json, the statistics files it names and the dead-letter
files it lists, and writes OUT/report.html: inline CSS and SVG, no script and
no network (its Content-Security-Policy forbids both), so it opens anywhere,
from a bucket or an e-mail attachment alike. Exits 0 after writing it, 2 with a
one-line error when OUT has no manifest or no statistics.

Sections, by element id: summary, dead-letters, features, vocabularies,
aggregates, anomalies. What the manifest must hold:

- "statistics": {"raw": path of the raw train statistics, "transformed":
  {split: path}}, paths relative to OUT (default: stats/raw_train.json and
  stats/transformed_<split>.json for the manifest's splits);
- "features": {name: {"kind", "cardinality", "sources": [column or feature
  names], "vocabulary_size": ids below it are in the vocabulary (vocabulary
  features only)}};
- "anomalies": the list from pipeline.anomalies.find_anomalies;
- optionally "key_column", "record_key" ("declared" | "derived"),
  "timestamp_column" (null without an event time) and "duplicate_keys"
  ({"count", "rows", "examples": [{"key", "rows"}]}, when a declared key is
  not unique), shown in the summary;
- and what pipeline.preprocess already writes: dataset, run_id, started_at,
  runner, inputs, counts, splits, dead_letter_files, aggregates, wall_seconds,
  rows_per_second, transform_fn_dir.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import posixpath
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pipeline.anomalies import oov_count
from pipeline.layout import (
    MANIFEST_NAME,
    RunLayout,
    join,
    raw_statistics_relpath,
    transformed_statistics_relpath,
)

SECTIONS = ("summary", "dead-letters", "features", "vocabularies", "aggregates", "anomalies")
# Dead-letter reasons look like "column: detail"; the part before ':' names the
# kind of problem, and 60 characters bound a reason that has no such prefix.
REASON_GROUP_LENGTH = 60
_EXAMPLE_LENGTH = 200


class ReportError(ValueError):
    """The output directory cannot be reported on (no manifest, no statistics)."""


# --- Files: local paths, or any Beam filesystem for URLs such as gs:// ---------


def _is_url(path: str) -> bool:
    return "://" in path


def _exists(path: str) -> bool:
    if _is_url(path):
        from apache_beam.io.filesystems import FileSystems  # only for remote outputs

        return FileSystems.exists(path)
    return os.path.exists(path)


def _read_lines(path: str) -> Iterable[str]:
    if _is_url(path):
        import io

        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as handle:
            yield from io.TextIOWrapper(handle, encoding="utf-8", errors="replace")
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield from handle


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads("".join(_read_lines(path)))
    except (OSError, json.JSONDecodeError) as error:
        raise ReportError(f"cannot read {what} {path}: {error}") from None


def _write_text(path: str, text: str) -> None:
    if _is_url(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as handle:
            handle.write(text.encode("utf-8"))
        return
    # Written aside and renamed, so a reader never sees half a page.
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)


# --- Reading a run -------------------------------------------------------------


def statistics_paths(manifest: dict, output_dir: str) -> tuple[str, dict[str, str]]:
    """(raw train statistics path, {split: transformed statistics path}) under output_dir."""
    named = manifest.get("statistics") or {}
    raw = named.get("raw", raw_statistics_relpath())
    transformed = named.get("transformed") or {
        split: transformed_statistics_relpath(split) for split in manifest.get("splits", {})
    }

    def under_output(path: str) -> str:
        return path if _is_url(path) or os.path.isabs(path) else join(output_dir, path)

    return under_output(raw), {split: under_output(path) for split, path in transformed.items()}


def dead_letter_path(path: str, output_dir: str, manifest: dict) -> str:
    """Where a dead-letter file listed in the manifest is now.

    The manifest lists paths as the run named them (relative to where it ran,
    e.g. out/local/dead_letter/...); when the report runs elsewhere, or the
    output was moved, the same path below output_dir is the one to read.
    """
    if _is_url(path) or os.path.isabs(path):
        return path
    run_root = posixpath.dirname(manifest.get("transform_fn_dir", "").rstrip("/"))
    if run_root and path.startswith(run_root + "/"):
        moved = join(output_dir, path[len(run_root) + 1 :])
        if _exists(moved):
            return moved
    return path if _exists(path) else join(output_dir, path)


def reason_group(reason: str) -> str:
    """The kind of a dead letter: its reason up to the first ':', at most 60 characters."""
    head, colon, _ = reason.partition(":")
    return (head if colon else reason)[:REASON_GROUP_LENGTH]


def dead_letter_groups(paths: Sequence[str]) -> tuple[list[dict], list[str]]:
    """([{"group", "count", "example"}] by descending count, unreadable paths).

    A line that is not a JSON object with a string `reason` is its own group,
    so that the counts still add up to the lines read.
    """
    groups: dict[str, dict] = {}
    unreadable = []
    for path in paths:
        if not _exists(path):
            unreadable.append(path)
            continue
        for line in _read_lines(path):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                reason = record["reason"] if isinstance(record, dict) else None
            except (json.JSONDecodeError, KeyError):
                reason = None
            if not isinstance(reason, str):
                reason = "(dead-letter line without a reason)"
            group = groups.setdefault(
                reason_group(reason), {"group": reason_group(reason), "count": 0, "example": reason}
            )
            group["count"] += 1
    ranked = sorted(groups.values(), key=lambda g: (-g["count"], g["group"]))
    return ranked, unreadable


def raw_sources(feature: str, features: dict, raw_columns: Iterable[str]) -> list[str]:
    """The raw columns a feature derives from, following `sources` through earlier
    features (a cross of bucketized columns derives from the raw columns)."""
    raw = set(raw_columns)
    found: list[str] = []
    seen: set[str] = set()
    followed = {feature}  # features whose sources are queued, against cycles
    pending = list(features.get(feature, {}).get("sources") or [])
    while pending:
        source = pending.pop(0)
        if source in seen:
            continue
        seen.add(source)
        # A column comes first: a passthrough feature may carry its column's name.
        if source in raw:
            found.append(source)
        elif source in features and source not in followed:
            followed.add(source)
            pending.extend(features[source].get("sources") or [])
    return found


# --- Formatting ----------------------------------------------------------------


def _text(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any) -> str:
    """Integers with thousands separators, floats to 6 significant digits, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return _text(value)


def _percent(part: float, whole: float) -> str:
    return f"{part / whole:.2%}" if whole else "—"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """A table from already-escaped cells."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _definition_list(pairs: Iterable[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{_text(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


# --- Charts --------------------------------------------------------------------

_CHART_WIDTH = 320
_CHART_HEIGHT = 120
_BAR_HEIGHT = 16


def histogram_svg(histogram: dict, label: str) -> str:
    """An inline SVG bar chart of {"edges", "counts"}; each bar's tooltip gives its range."""
    edges, counts = histogram["edges"], histogram["counts"]
    top, bottom, left = 14, 18, 4
    plot_height = _CHART_HEIGHT - top - bottom
    plot_width = _CHART_WIDTH - 2 * left
    tallest = max(max(counts), 1)
    width = plot_width / len(counts)
    bars = []
    for i, count in enumerate(counts):
        height = plot_height * count / tallest
        x = left + i * width
        y = top + plot_height - height
        tip = f"[{edges[i]:.6g}, {edges[i + 1]:.6g}): {count:,}"
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width - 1, 1):.1f}" '
            f'height="{height:.1f}"><title>{_text(tip)}</title></rect>'
        )
    axis_y = top + plot_height + 12
    return (
        f'<svg class="chart" role="img" width="{_CHART_WIDTH}" height="{_CHART_HEIGHT}" '
        f'viewBox="0 0 {_CHART_WIDTH} {_CHART_HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{_text(f'histogram of {label}')}</title>"
        f'<text x="{left}" y="10">{_text(f"max {max(counts):,}")}</text>'
        + "".join(bars)
        + f'<text x="{left}" y="{axis_y}">{_text(f"{edges[0]:.4g}")}</text>'
        f'<text x="{_CHART_WIDTH - left}" y="{axis_y}" text-anchor="end">'
        f"{_text(f'{edges[-1]:.4g}')}</text></svg>"
    )


def top_values_svg(top_values: Sequence[Sequence[Any]], total: int, label: str) -> str:
    """An inline SVG of horizontal bars, one per [value, count], with the share of `total`."""
    label_width, count_width = 110, 90
    bar_space = _CHART_WIDTH - label_width - count_width
    height = _BAR_HEIGHT * len(top_values) + 4
    largest = max((count for _, count in top_values), default=1) or 1
    rows = []
    for i, (value, count) in enumerate(top_values):
        y = 2 + i * _BAR_HEIGHT
        shown = str(value)
        short = shown if len(shown) <= 16 else shown[:15] + "…"
        width = bar_space * count / largest
        rows.append(
            f"<g><title>{_text(f'{shown}: {count:,} ({_percent(count, total)})')}</title>"
            f'<text x="{label_width - 4}" y="{y + 12}" text-anchor="end">{_text(short)}</text>'
            f'<rect x="{label_width}" y="{y + 2}" width="{max(width, 1):.1f}" '
            f'height="{_BAR_HEIGHT - 4}"></rect>'
            f'<text x="{label_width + width + 4:.1f}" y="{y + 12}">'
            f"{_text(f'{count:,} · {_percent(count, total)}')}</text></g>"
        )
    return (
        f'<svg class="chart" role="img" width="{_CHART_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_CHART_WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{_text(f'most frequent values of {label}')}</title>" + "".join(rows) + "</svg>"
    )


def column_panel(
    name: str, column: dict | None, caption: str, flags: Sequence[dict] = (), extra: str = ""
) -> str:
    """A figure with a column's chart, its main numbers and `extra` (escaped) HTML."""
    css = "panel flagged" if flags else "panel"
    heading = f"<figcaption><b>{_text(name)}</b> <span class='muted'>{_text(caption)}</span>"
    heading += "".join(f" <span class='flag'>{_text(f['kind'])}</span>" for f in flags)
    heading += "</figcaption>"
    if column is None:
        return f'<figure class="{css}">{heading}<p class="muted">no statistics</p>{extra}</figure>'
    rows: list[tuple[str, str]] = [
        ("values", _number(column["count"])),
        ("missing rows", _number(column["missing"])),
    ]
    if column["kind"] == "numeric":
        chart = (
            histogram_svg(column["histogram"], name)
            if column.get("histogram")
            else "<p class='muted'>no finite values</p>"
        )
        quantiles = column.get("quantiles") or [None] * 11
        rows += [
            ("min", _number(column["min"])),
            ("median", _number(quantiles[5])),
            ("max", _number(column["max"])),
            ("mean", _number(column["mean"])),
            ("std", _number(column["std"])),
        ]
        for key, title in (("nan_count", "NaN"), ("inf_count", "±inf")):
            if column.get(key):
                rows.append((title, _number(column[key])))
    else:
        if not column["top_values"]:
            chart = "<p class='muted'>no values</p>"
        elif column["top_values"][0][1] == 1:
            # A record key, say: twenty bars of 1 would say nothing.
            chart = "<p class='muted'>no value occurs twice</p>"
        else:
            chart = top_values_svg(column["top_values"], column["count"], name)
        unique = column.get("unique")
        at_least = column.get("unique_at_least")
        shown = _number(unique) if unique is not None else f"at least {_number(at_least)}"
        rows.append(("distinct", shown))
    return f'<figure class="{css}">{heading}{chart}{_definition_list(rows)}{extra}</figure>'


def split_table(feature: str, transformed: dict[str, dict]) -> str:
    """A feature's count, missing rows and range on every split."""
    rows = []
    for split, stats in transformed.items():
        column = stats["columns"].get(feature)
        if column is None:
            continue
        if column["kind"] == "numeric":
            spread = f"{_number(column['min'])} … {_number(column['max'])}"
        else:
            unique = column.get("unique")
            spread = f"{_number(unique)} distinct" if unique is not None else "many distinct"
        rows.append((_text(split), _number(column["count"]), _number(column["missing"]), spread))
    return _table(("split", "values", "missing", "range"), rows, "splits") if rows else ""


# --- Sections ------------------------------------------------------------------


def _summary_section(manifest: dict, dead_letter_total: int) -> str:
    counts = manifest.get("counts", {})
    read = counts.get("read")
    facts = [
        ("dataset", _text(manifest.get("dataset", "—"))),
        ("run id", _text(manifest.get("run_id", "—"))),
        ("started", _text(manifest.get("started_at", "—"))),
        ("runner", _text(manifest.get("runner", "—"))),
        ("wall time", f"{_number(manifest.get('wall_seconds'))} s"),
        ("throughput", f"{_number(manifest.get('rows_per_second'))} rows/s"),
    ]
    if "key_column" in manifest:
        how = {"derived": " (derived: no key column declared)"}.get(manifest.get("record_key"), "")
        facts.append(("record key", _text(manifest["key_column"]) + how))
    if "timestamp_column" in manifest:
        facts.append(("event time", _text(manifest["timestamp_column"] or "none")))
    inputs = _table(
        ("input", "bytes"),
        (
            (_text(i.get("path") or i.get("bigquery") or "—"), _number(i.get("size_bytes")))
            for i in manifest.get("inputs", [])
        ),
    )
    count_rows = [
        ("rows read", _number(read), ""),
        ("valid", _number(counts.get("valid")), _percent(counts.get("valid") or 0, read or 0)),
        (
            "dead letters",
            _number(counts.get("dead_letter", dead_letter_total)),
            _percent(counts.get("dead_letter", dead_letter_total) or 0, read or 0),
        ),
        ("header lines", _number(counts.get("header_lines")), ""),
    ]
    unseen = counts.get("unseen_label_classes")
    if unseen:
        # Dead letters too: eval/test rows of a label class that train never saw.
        count_rows.insert(
            3, ("of which unseen label classes", _number(unseen), _percent(unseen, read or 0))
        )
    valid = counts.get("valid") or 0
    for split, info in manifest.get("splits", {}).items():
        count = info.get("count", counts.get(split))
        count_rows.append((f"split {_text(split)}", _number(count), _percent(count or 0, valid)))
    return (
        '<section id="summary"><h2>Summary</h2>'
        + _definition_list(facts)
        + "<h3>Inputs</h3>"
        + inputs
        + "<h3>Counts</h3>"
        + _table(("", "rows", "share"), count_rows, "counts")
        + _duplicate_keys(manifest)
        + "</section>"
    )


def _duplicate_keys(manifest: dict) -> str:
    """A warning with examples when the declared key is not unique, else nothing."""
    duplicates = manifest.get("duplicate_keys")
    if not duplicates or not duplicates.get("count"):
        return ""
    return (
        '<h3 id="duplicate-keys">Duplicate keys</h3>'
        f"<p>The key column {_text(manifest.get('key_column', '—'))} is not unique: "
        f"{_number(duplicates['count'])} values are held by {_number(duplicates.get('rows'))} "
        "rows, whose examples cannot be told apart by key.</p>"
        + _table(
            ("key", "rows"),
            ((_text(e["key"]), _number(e["rows"])) for e in duplicates.get("examples", [])),
            "duplicates",
        )
    )


def _dead_letter_section(groups: list[dict], unreadable: list[str]) -> str:
    total = sum(group["count"] for group in groups)
    parts = ['<section id="dead-letters"><h2>Dead letters</h2>']
    if groups:
        parts.append(f"<p>{total:,} dead letters, by reason:</p>")
        parts.append(
            _table(
                ("reason", "count", "share", "example"),
                (
                    (
                        _text(g["group"]),
                        _number(g["count"]),
                        _percent(g["count"], total),
                        _text(g["example"][:_EXAMPLE_LENGTH]),
                    )
                    for g in groups
                ),
                "reasons",
            )
        )
    else:
        parts.append("<p>No dead letters were read.</p>")
    for path in unreadable:
        parts.append(f"<p class='warning'>Dead-letter file not found: {_text(path)}</p>")
    return "".join(parts) + "</section>"


def _features_section(
    raw: dict, transformed: dict[str, dict], features: dict, anomalies: list[dict]
) -> str:
    reference = transformed.get("train") or next(iter(transformed.values()), None)
    reference_split = "train" if "train" in transformed else next(iter(transformed), "")

    def flags(stage: str, name: str) -> list[dict]:
        return [a for a in anomalies if a.get("stage") == stage and a.get("feature") == name]

    derived: dict[str, list[str]] = {column: [] for column in raw["columns"]}
    # Transformed columns the manifest does not list (the label, a custom
    # preprocessing_fn's outputs) are shown too, with the unpaired ones.
    listed = list(features) + [
        name for name in (reference or {"columns": {}})["columns"] if name not in features
    ]
    unpaired = []
    for feature in listed:
        sources = raw_sources(feature, features, raw["columns"])
        for source in sources:
            derived[source].append(feature)
        if not sources:
            unpaired.append(feature)

    def transformed_panel(feature: str) -> str:
        column = reference["columns"].get(feature) if reference else None
        kind = features.get(feature, {}).get("kind", "")
        return column_panel(
            feature,
            column,
            ", ".join(part for part in (f"transformed {kind}".strip(), reference_split) if part),
            flags("transformed", feature),
            split_table(feature, transformed),
        )

    parts = [
        '<section id="features"><h2>Features</h2>',
        "<p>Each raw column (train split) beside the transformed features derived from it.</p>",
    ]
    for column_name, column in raw["columns"].items():
        parts.append('<div class="pair"><div class="raw">')
        parts.append(column_panel(column_name, column, "raw, train", flags("raw", column_name)))
        parts.append('</div><div class="derived">')
        if derived[column_name]:
            parts.extend(
                f'<div class="transformed">{transformed_panel(f)}</div>'
                for f in derived[column_name]
            )
        else:
            parts.append("<p class='muted'>No transformed feature derives from this column.</p>")
        parts.append("</div></div>")
    if unpaired:
        parts.append(
            "<h3>Features without a raw column</h3><p class='muted'>Their sources are derived "
            "columns, or the manifest names no sources for them.</p><div class='grid'>"
        )
        parts.extend(f'<div class="transformed">{transformed_panel(f)}</div>' for f in unpaired)
        parts.append("</div>")
    return "".join(parts) + "</section>"


def _vocabulary_section(features: dict, transformed: dict[str, dict]) -> str:
    vocabularies = {
        name: info["vocabulary_size"]
        for name, info in features.items()
        if isinstance(info.get("vocabulary_size"), int)
    }
    parts = ['<section id="vocabularies"><h2>Vocabularies</h2>']
    if not vocabularies:
        parts.append("<p>The manifest names no vocabulary feature.</p></section>")
        return "".join(parts)
    eval_stats = transformed.get("eval")
    rows = []
    for name, size in sorted(vocabularies.items()):
        column = eval_stats["columns"].get(name) if eval_stats else None
        if column is None:
            rows.append((_text(name), _number(size), "—", "—", "no eval statistics"))
            continue
        oov = oov_count(column, size)
        if oov is None:
            coverage = "unknown (no per-id counts)"
        elif column["count"] == 0:
            coverage = "no eval values"
        else:
            coverage = f"{1 - oov / column['count']:.2%}"
        rows.append((_text(name), _number(size), _number(column["count"]), _number(oov), coverage))
    parts.append(
        _table(("feature", "size", "eval values", "out of vocabulary", "eval coverage"), rows)
    )
    return "".join(parts) + "</section>"


def _aggregate_section(manifest: dict, raw: dict) -> str:
    aggregates = manifest.get("aggregates") or []
    parts = ['<section id="aggregates"><h2>Aggregates</h2>']
    if not aggregates:
        parts.append("<p>The spec declares no windowed aggregates.</p>")
    parts.append("<div class='grid'>")
    for aggregate in aggregates:
        name = aggregate.get("name", "")
        of = f" of {aggregate['value']}" if aggregate.get("value") else ""
        caption = (
            f"{aggregate.get('agg')}{of} per {', '.join(aggregate.get('key', []))} over "
            f"{aggregate.get('window_seconds')} s, every {aggregate.get('period_seconds')} s "
            f"(empty window: {aggregate.get('default')})"
        )
        parts.append(column_panel(name, raw["columns"].get(name), caption))
    return "".join(parts) + "</div></section>"


def _anomaly_section(anomalies: list[dict] | None) -> str:
    parts = ['<section id="anomalies"><h2>Anomalies</h2>']
    if anomalies is None:
        parts.append("<p>The manifest records no anomaly check.</p>")
    elif not anomalies:
        parts.append("<p>None found.</p>")
    else:
        parts.append(
            _table(
                ("kind", "stage", "feature", "split", "value", "threshold", "message"),
                (
                    (
                        _text(a.get("kind")),
                        _text(a.get("stage", "")),
                        _text(a.get("feature")),
                        _text(a.get("split") or "—"),
                        _number(a.get("value")),
                        _number(a.get("threshold")),
                        _text(a.get("message")),
                    )
                    for a in anomalies
                ),
                "anomalies",
            )
        )
    return "".join(parts) + "</section>"


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 2rem 3rem; color: #1d232b; }
h1 { font-size: 1.5rem; } h2 { border-bottom: 2px solid #d0d7de; padding-top: 1rem; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #d0d7de; padding: .2rem .5rem; text-align: left; vertical-align: top; }
td:nth-child(n+2) { font-variant-numeric: tabular-nums; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0 1rem; margin: .4rem 0; }
dt { color: #57606a; } dd { margin: 0; font-variant-numeric: tabular-nums; }
.pair { display: flex; gap: 1rem; align-items: flex-start; border-top: 1px solid #eaeef2;
        padding: .6rem 0; }
.derived, .grid { display: flex; flex-wrap: wrap; gap: 1rem; }
.panel { margin: 0; padding: .4rem; border: 1px solid #d0d7de; border-radius: 4px;
         width: 340px; }
.panel.flagged { border-color: #cf222e; }
.flag { background: #ffebe9; color: #cf222e; border-radius: 3px; padding: 0 .3rem; }
.muted { color: #57606a; } .warning { color: #cf222e; }
svg.chart rect { fill: #4a7fc1; } svg.chart text { font-size: 10px; fill: #1d232b; }
table.splits { font-size: 12px; }
table.reasons td:is(:first-child, :last-child), table.anomalies td:last-child {
  max-width: 36rem; overflow-wrap: anywhere; }
"""


def build_report(
    manifest: dict,
    raw: dict,
    transformed: dict[str, dict],
    dead_letters: tuple[list[dict], list[str]],
) -> str:
    """The report page from already-read inputs (see the module docstring)."""
    groups, unreadable = dead_letters
    features = manifest.get("features") or {}
    anomalies = manifest.get("anomalies")
    title = f"Preprocessing run {manifest.get('dataset', '')} {manifest.get('run_id', '')}"
    nav = "".join(f'<a href="#{section}">{section}</a>' for section in SECTIONS)
    body = "".join(
        [
            _summary_section(manifest, sum(g["count"] for g in groups)),
            _dead_letter_section(groups, unreadable),
            _features_section(raw, transformed, features, anomalies or []),
            _vocabulary_section(features, transformed),
            _aggregate_section(manifest, raw),
            _anomaly_section(anomalies),
        ]
    )
    # The policy makes the page's promise checkable: nothing loads from the
    # network and no script runs, whoever later edits this template.
    policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        f"<title>{_text(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{_text(title)}</h1><nav>{nav}</nav></header>{body}</body></html>\n"
    )


def render_report(output_dir: str) -> str:
    """Writes OUTPUT/report.html for a finished run and returns its path.

    Raises ReportError when output_dir has no manifest.json or its raw
    statistics file is missing; a missing transformed statistics file or
    dead-letter file is shown as such in the page.
    """
    manifest_path = RunLayout(output_dir).manifest_path
    if not _exists(manifest_path):
        raise ReportError(f"{output_dir} has no {MANIFEST_NAME}; is it a finished run?")
    manifest = _read_json(manifest_path, "manifest")
    raw_path, transformed_paths = statistics_paths(manifest, output_dir)
    if not _exists(raw_path):
        raise ReportError(f"{output_dir} has no statistics: {raw_path} does not exist")
    raw = _read_json(raw_path, "statistics")
    transformed = {
        split: _read_json(path, "statistics")
        for split, path in transformed_paths.items()
        if _exists(path)
    }
    dead_letter_files = [
        dead_letter_path(path, output_dir, manifest)
        for path in manifest.get("dead_letter_files", [])
    ]
    page = build_report(manifest, raw, transformed, dead_letter_groups(dead_letter_files))
    report_path = RunLayout(output_dir).report_path
    _write_text(report_path, page)
    return report_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="Write OUTPUT/report.html describing a finished preprocessing run.",
    )
    parser.add_argument(
        "--output_dir", required=True, type=str, help="output directory of a finished run"
    )
    args = parser.parse_args(argv)
    try:
        path = render_report(args.output_dir)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
