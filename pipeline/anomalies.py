"""Anomaly checks on a run's statistics: pure functions over the dicts that
`transforms.statistics.StatisticsCombineFn` produces (no Beam, no TensorFlow).

`find_anomalies` returns a list of JSON-serializable anomalies, each

    {"kind", "stage", "feature", "split", "value", "threshold", "message"}

`stage` is "raw" (a raw column) or "transformed" (a transformed feature), since
a passthrough feature may carry its column's name. Kinds:

- out_of_range: a feature scaled to [0, 1] has a value outside it on some split
  (value: the offending min or max, threshold: the bound it crosses; or value:
  the number of NaN and infinite values, threshold: null). On the split it was
  scaled on (train) any crossing counts; on the others, which hold values train
  never saw, only one by more than `out_of_range_tolerance` of the range does;
- oov_rate: the share of a vocabulary feature's eval ids that are out of
  vocabulary exceeds `max_oov_rate` (see `oov_count`);
- constant: a column or feature with values has a single distinct value;
- always_missing: a column or feature has no value in any row;
- drift: a raw train column's distribution moved since a baseline run, by
  Jensen-Shannon divergence for numeric columns and L-infinity distance for
  categorical ones, as TensorFlow Data Validation measures them (see
  `jensen_shannon_divergence` for why the divergence, not its square root).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from schemas.spec import Anomalies, DatasetSpec

_LOG = logging.getLogger(__name__)

# The spec's section holds the defaults, so that they are written once.
_SPEC_DEFAULTS = Anomalies()

# scale_to_0_1 computes in float32, whose rounding can land a train value a few
# ulps outside [0, 1]; that is not an anomaly.
_RANGE_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class AnomalyThresholds:
    """Limits above which a statistic is an anomaly; each in [0, 1]."""

    max_oov_rate: float = _SPEC_DEFAULTS.max_oov_rate
    numeric_drift: float = _SPEC_DEFAULTS.numeric_drift
    categorical_drift: float = _SPEC_DEFAULTS.categorical_drift
    out_of_range_tolerance: float = _SPEC_DEFAULTS.out_of_range_tolerance

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field.name} must be in [0, 1], got {value!r}")

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> AnomalyThresholds:
        """The thresholds of the spec's `anomalies:` section (defaults when absent)."""
        section = spec.anomalies
        return cls(
            max_oov_rate=section.max_oov_rate,
            numeric_drift=section.numeric_drift,
            categorical_drift=section.categorical_drift,
            out_of_range_tolerance=section.out_of_range_tolerance,
        )


def find_anomalies(
    raw_stats: dict,
    transformed_stats: dict[str, dict],
    vocabulary_features: dict[str, int],
    thresholds: AnomalyThresholds,
    scaled_features: Sequence[str] = (),
    baseline: dict | None = None,
    scaled_on: str = "train",
) -> list[dict]:
    """Every anomaly in a run's statistics, in a stable order.

    raw_stats: statistics of the raw train split. transformed_stats: split name
    -> statistics of the transformed split. vocabulary_features: vocabulary
    feature -> its size (ids at or above it, and negative ids, are out of
    vocabulary); their transformed columns must have been described as
    "categorical" so that the statistics carry `value_counts` (one whose
    out-of-vocabulary count cannot be known is skipped with a warning; the
    report shows its coverage as unknown). scaled_features:
    features whose values must lie in [0, 1]. baseline: {"raw": raw train
    statistics, "transformed": {split: ...}} of an earlier run, for drift.
    scaled_on: the split whose range the scaling maps to [0, 1].
    """
    anomalies: list[dict] = []
    anomalies += _missing_and_constant(raw_stats, "raw", "train")
    for split in sorted(transformed_stats):
        anomalies += _missing_and_constant(transformed_stats[split], "transformed", split)
    for split in sorted(transformed_stats):
        for feature in scaled_features:
            column = transformed_stats[split]["columns"].get(feature)
            if column is not None:
                tolerance = (
                    _RANGE_TOLERANCE
                    if split == scaled_on
                    else max(thresholds.out_of_range_tolerance, _RANGE_TOLERANCE)
                )
                anomalies += _out_of_range(feature, split, column, tolerance)
    eval_stats = transformed_stats.get("eval")
    if eval_stats is not None:
        for feature in sorted(vocabulary_features):
            column = eval_stats["columns"].get(feature)
            if column is not None:
                anomalies += _oov(feature, column, vocabulary_features[feature], thresholds)
    if baseline is not None and baseline.get("raw") is not None:
        anomalies += _drift(raw_stats, baseline["raw"], thresholds)
    return anomalies


def _anomaly(
    kind: str,
    stage: str,
    feature: str,
    split: str | None,
    value: Any,
    threshold: Any,
    message: str,
) -> dict:
    return {
        "kind": kind,
        "stage": stage,
        "feature": feature,
        "split": split,
        "value": value,
        "threshold": threshold,
        "message": message,
    }


def _describe(stage: str, feature: str) -> str:
    return f"raw column '{feature}'" if stage == "raw" else f"feature '{feature}'"


def _missing_and_constant(stats: dict, stage: str, split: str) -> list[dict]:
    anomalies = []
    for feature in sorted(stats["columns"]):
        column = stats["columns"][feature]
        name = _describe(stage, feature)
        if column["count"] == 0 and stats["num_rows"] > 0:
            anomalies.append(
                _anomaly(
                    "always_missing",
                    stage,
                    feature,
                    split,
                    stats["num_rows"],
                    None,
                    f"The {name} has no value in any of the {stats['num_rows']} rows of "
                    f"split '{split}'.",
                )
            )
            continue
        constant = constant_value(column)
        if constant is not None:
            anomalies.append(
                _anomaly(
                    "constant",
                    stage,
                    feature,
                    split,
                    constant[0],
                    None,
                    f"The {name} takes the single value {constant[0]!r} in all "
                    f"{column['count']} values of split '{split}'.",
                )
            )
    return anomalies


def constant_value(column: dict) -> tuple[Any] | None:
    """(the value,) when a column with values has exactly one distinct value, else None.

    A numeric column is constant when min == max and it has no NaN or inf; a
    categorical one when its distinct count is 1 (unknown past the statistics'
    bound on distinct values, and then not constant).
    """
    if column["count"] == 0:
        return None
    if column["kind"] == "numeric":
        plain = not column.get("nan_count") and not column.get("inf_count")
        if plain and column["min"] is not None and column["min"] == column["max"]:
            return (column["min"],)
        return None
    if column.get("unique") == 1:
        return (column["top_values"][0][0],)
    return None


def _out_of_range(feature: str, split: str, column: dict, tolerance: float) -> list[dict]:
    """The split's NaN/infinite values and its crossings of [0, 1] by more than
    `tolerance` (the range is 1 after scaling, so a share of it is a distance)."""
    anomalies = []
    # min and max leave NaN and inf out, so those are checked on their own.
    non_finite = column.get("nan_count", 0) + column.get("inf_count", 0)
    if non_finite:
        anomalies.append(
            _anomaly(
                "out_of_range",
                "transformed",
                feature,
                split,
                non_finite,
                None,
                f"The feature '{feature}' is scaled to [0, 1] but has {non_finite} NaN or "
                f"infinite values on split '{split}'.",
            )
        )
    low, high = column.get("min"), column.get("max")
    crossings = (
        ("minimum", low, 0.0, low is not None and low < -tolerance),
        ("maximum", high, 1.0, high is not None and high > 1.0 + tolerance),
    )
    allowance = (
        f", more than the tolerance of {tolerance:g}" if tolerance > _RANGE_TOLERANCE else ""
    )
    for extreme, value, bound, crossed in crossings:
        if crossed:
            anomalies.append(
                _anomaly(
                    "out_of_range",
                    "transformed",
                    feature,
                    split,
                    value,
                    bound,
                    f"The feature '{feature}' is scaled to [0, 1] but has {extreme} "
                    f"{value:.6g} on split '{split}'{allowance}.",
                )
            )
    return anomalies


def oov_count(column: dict, vocabulary_size: int) -> int | None:
    """How many of a vocabulary feature's ids are out of vocabulary, or None if unknown.

    tf.Transform maps an out-of-vocabulary value to an id at or above the
    vocabulary's size (one of its OOV buckets), or to -1 when it has none. The
    exact count comes from `value_counts`, which the statistics carry for
    integer columns described as categorical while their distinct ids number at
    most max_unique. Without them, only a range entirely inside or outside the
    vocabulary settles the count.
    """
    if "value_counts" in column:
        return sum(
            count for value, count in column["value_counts"] if _is_oov(value, vocabulary_size)
        )
    if column["count"] == 0:
        return 0
    low, high = column.get("min"), column.get("max")
    finite = not column.get("nan_count") and not column.get("inf_count")
    if column["kind"] == "numeric" and low is not None and finite:
        if low >= 0 and high < vocabulary_size:
            return 0
        if low >= vocabulary_size or high < 0:
            return column["count"]
    return None


def _is_oov(value: Any, vocabulary_size: int) -> bool:
    return value < 0 or value >= vocabulary_size


def oov_rate(column: dict, vocabulary_size: int) -> float | None:
    """Out-of-vocabulary share of a vocabulary feature's values; None if unknown or no value."""
    count = oov_count(column, vocabulary_size)
    if count is None or column["count"] == 0:
        return None
    return count / column["count"]


def _oov(feature: str, column: dict, size: int, thresholds: AnomalyThresholds) -> list[dict]:
    rate = oov_rate(column, size)
    if rate is None and column["count"]:
        _LOG.warning(
            "cannot tell the out-of-vocabulary rate of %s on eval: its statistics have no "
            "value_counts (describe it as categorical, with at most max_unique ids)",
            feature,
        )
    if rate is None or rate <= thresholds.max_oov_rate:
        return []
    return [
        _anomaly(
            "oov_rate",
            "transformed",
            feature,
            "eval",
            rate,
            thresholds.max_oov_rate,
            f"{rate:.2%} of the values of feature '{feature}' on split 'eval' are outside "
            f"its vocabulary of {size} entries (limit {thresholds.max_oov_rate:.2%}).",
        )
    ]


def _drift(raw_stats: dict, baseline_raw: dict, thresholds: AnomalyThresholds) -> list[dict]:
    anomalies = []
    for feature in sorted(raw_stats["columns"]):
        current = raw_stats["columns"][feature]
        previous = baseline_raw["columns"].get(feature)
        if previous is None or previous["kind"] != current["kind"]:
            continue
        if current["kind"] == "numeric":
            distance = numeric_drift(current, previous)
            threshold, measure = thresholds.numeric_drift, "Jensen-Shannon divergence"
        else:
            distance = categorical_drift(current, previous)
            threshold, measure = thresholds.categorical_drift, "L-infinity distance"
        if distance is not None and distance > threshold:
            anomalies.append(
                _anomaly(
                    "drift",
                    "raw",
                    feature,
                    "train",
                    distance,
                    threshold,
                    f"The distribution of raw column '{feature}' on split 'train' moved from "
                    f"the baseline run's by {measure} {distance:.3f} (limit {threshold}).",
                )
            )
    return anomalies


def numeric_drift(current: dict, previous: dict) -> float | None:
    """Jensen-Shannon divergence (base 2, so in [0, 1]) between two columns'
    histograms, or None when either has no histogram."""
    if not current.get("histogram") or not previous.get("histogram"):
        return None
    integer_valued = bool(current.get("integer_valued") and previous.get("integer_valued"))
    return jensen_shannon_divergence(current["histogram"], previous["histogram"], integer_valued)


def jensen_shannon_divergence(
    first: Mapping, second: Mapping, integer_valued: bool = False
) -> float:
    """Jensen-Shannon divergence, base 2 (in [0, 1]), between two histograms
    ({"edges", "counts"}) after both are re-binned on the union of their edges.

    Re-binning spreads each bin's count evenly over its width, the assumption a
    histogram makes anyway, or, for `integer_valued` columns, evenly over the
    whole numbers inside it: two histograms of counts with different edges put
    each integer in bins of different widths, and spreading over widths would
    smear one integer's mass onto its neighbours' (a divergence of 0.24 between
    train and test of the taxi run's zone_trips_1h; 0.0005 spread over integers).
    A histogram of a single value is a point mass that goes whole into the
    common bin holding it.

    The divergence, like TFDV's jensen_shannon_divergence, rather than the
    distance (its square root): spreading counts over bins that a few outliers
    made wide puts the distance of two samples of one distribution near 0.1
    (0.12 to 0.18 for the taxi coordinates, train against eval of one run),
    which a 0.1 threshold would report as drift; the divergence stays below 0.035.
    """
    common = np.union1d(first["edges"], second["edges"])
    if len(common) == 1:  # both are point masses at the same value
        return 0.0
    p = _rebin(first, common, integer_valued)
    q = _rebin(second, common, integer_valued)
    if p.sum() == 0 or q.sum() == 0:
        return 0.0 if p.sum() == q.sum() else 1.0
    p, q = p / p.sum(), q / q.sum()
    middle = (p + q) / 2
    divergence = (_kullback_leibler(p, middle) + _kullback_leibler(q, middle)) / 2
    # Rounding can leave a hair outside [0, 1].
    return min(max(divergence, 0.0), 1.0)


def _kullback_leibler(p: np.ndarray, q: np.ndarray) -> float:
    present = p > 0  # 0 * log(0 / q) is 0; q > 0 wherever p > 0 since q is a mixture with p
    return float(np.sum(p[present] * np.log2(p[present] / q[present])))


def _integer_ranges(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last whole number of each bin [e_i, e_i+1), the last bin closed."""
    first = np.ceil(edges[:-1])
    last = np.ceil(edges[1:]) - 1
    last[-1] = np.floor(edges[-1])
    return first, last


def _rebin(histogram: Mapping, common: np.ndarray, integer_valued: bool) -> np.ndarray:
    edges = np.asarray(histogram["edges"], dtype=np.float64)
    counts = np.asarray(histogram["counts"], dtype=np.float64)
    rebinned = np.zeros(len(common) - 1)
    if edges[0] == edges[-1]:
        points, masses = edges[:1], counts.sum(keepdims=True)
    else:
        # How much of every source bin (rows) each common bin (columns) covers:
        # a length, or a number of whole numbers.
        if integer_valued:
            source_first, source_last = _integer_ranges(edges)
            common_first, common_last = _integer_ranges(common)
            overlap = (
                np.minimum(source_last[:, None], common_last[None, :])
                - np.maximum(source_first[:, None], common_first[None, :])
                + 1
            )
            sizes = source_last - source_first + 1
        else:
            overlap = np.minimum(edges[1:, None], common[None, 1:]) - np.maximum(
                edges[:-1, None], common[None, :-1]
            )
            sizes = edges[1:] - edges[:-1]
        overlap = np.clip(overlap, 0.0, None)
        spread = sizes > 0
        rebinned += (counts[spread, None] * overlap[spread] / sizes[spread, None]).sum(axis=0)
        # A bin without width or whole numbers holds no values of a histogram that
        # transforms.statistics built; should one hold some, they count at its edge.
        points, masses = edges[:-1][~spread], counts[~spread]
    for point, mass in zip(points, masses, strict=True):
        if mass:
            index = np.searchsorted(common, point, side="right") - 1
            rebinned[min(max(index, 0), len(rebinned) - 1)] += mass
    return rebinned


def categorical_drift(current: dict, previous: dict) -> float | None:
    """L-infinity distance between two columns' value frequencies, or None without values.

    Frequencies are counts over each column's total count, over the union of the
    values both statistics list (every value when both carry value_counts, else
    the top values); a value one side does not list counts as 0 there.
    """
    if current["count"] == 0 or previous["count"] == 0:
        return None
    # Both sides must list the same kind of thing: all values against only the
    # top ones would count every value outside one side's top as a change.
    both_complete = "value_counts" in current and "value_counts" in previous
    listing = "value_counts" if both_complete else "top_values"
    current_share = _shares(current, listing)
    previous_share = _shares(previous, listing)
    if not current_share and not previous_share:
        return None  # past the bound on distinct values nothing may be listed
    return max(
        abs(current_share.get(value, 0.0) - previous_share.get(value, 0.0))
        for value in current_share.keys() | previous_share.keys()
    )


def _shares(column: dict, listing: str) -> dict[Any, float]:
    return {value: count / column["count"] for value, count in column[listing]}
