"""Comparing two sets of rows' distributions with TFDV: the drift gate (newest batch vs the previous
one) and ``skew`` (served requests vs training) share this. No TFX.

Both sides are plain rows (dicts of the same columns, one per listing or picture). TFDV computes each
side's statistics (``generate_statistics_from_dataframe``) and compares them
(``validate_statistics`` with ``previous_statistics`` for drift, ``serving_statistics`` for skew):
L-infinity distance on the categorical columns, Jensen-Shannon divergence on the numeric ones. Every
figure is TFDV's; nothing here counts or bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

DRIFT = "drift"
SKEW = "skew"
_MEASURES = {"L_INFTY": "L-infinity", "JENSEN_SHANNON_DIVERGENCE": "Jensen-Shannon divergence"}


class NothingCompared(RuntimeError):
    """TFDV measured nothing: the rows share no comparable column."""


@dataclass(frozen=True)
class Thresholds:
    linf: float = 0.2  # L-infinity distance of a categorical column's distribution
    jsd: float = 0.2  # Jensen-Shannon divergence of a numeric column's distribution


def statistics(rows: Sequence[Dict[str, Any]], columns: Sequence[str]):
    """TFDV's statistics of ``rows`` restricted to ``columns`` (None: missing)."""
    import pandas as pd
    import tensorflow_data_validation as tfdv

    return tfdv.generate_statistics_from_dataframe(
        pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=list(columns)))


def compare(reference: Sequence[Dict[str, Any]], current: Sequence[Dict[str, Any]], categorical: Sequence[str],
            numeric: Sequence[str], thresholds: Thresholds, mode: str = DRIFT) -> Dict[str, Any]:
    """TFDV's measurements of ``current`` against ``reference``.

    Args:
      reference: the earlier side (previous batch; training rows).
      current: the side under test (newest batch; served requests).
      categorical, numeric: the columns compared by L-infinity and by Jensen-Shannon divergence.
      thresholds: the largest distance of each kind that does not count as moved.
      mode: ``drift`` (TFDV's drift comparators, ``previous_statistics``) or ``skew`` (skew
        comparators, ``serving_statistics``).

    Returns:
      ``{"measurements": [{feature, measure, value, threshold, moved}], "moved": [...],
      "not_compared": {column: why}, "anomalies": {feature: TFDV's description},
      "_statistics": (reference, current)}``: a column that no row of one side carries is left out
      (in ``not_compared``), not counted as moved.

    Raises:
      NothingCompared: TFDV measured nothing.
      ValueError: an unknown ``mode``, or no rows on one side.
    """
    import tensorflow_data_validation as tfdv

    if mode not in (DRIFT, SKEW):
        raise ValueError(f"mode must be '{DRIFT}' or '{SKEW}', got {mode!r}")
    if not reference or not current:
        raise ValueError(f"nothing to compare: {len(reference)} reference rows, {len(current)} current rows")
    wanted = list(categorical) + list(numeric)
    not_compared = {}
    vanished: List[Dict[str, Any]] = []
    for c in wanted:
        in_reference = any(r.get(c) is not None for r in reference)
        in_current = any(r.get(c) is not None for r in current)
        if mode == DRIFT and in_reference and not in_current:
            # In drift, a feature the newest batch lost (no category at all, no readable picture) moved.
            vanished.append({"feature": c, "measure": "absent from every newest row", "value": 1.0,
                             "threshold": 0.0, "moved": True})
        if not (in_reference and in_current):
            not_compared.setdefault(c, f"no {'reference' if not in_reference else 'current'} row carries it")
    columns = [c for c in wanted if c not in not_compared]
    reference_stats, current_stats = statistics(reference, columns), statistics(current, columns)
    schema = tfdv.infer_schema(reference_stats)
    for name in columns:
        feature = tfdv.get_feature(schema, name)
        comparator = feature.drift_comparator if mode == DRIFT else feature.skew_comparator
        if name in categorical:
            comparator.infinity_norm.threshold = thresholds.linf
        else:
            comparator.jensen_shannon_divergence.threshold = thresholds.jsd
    if mode == DRIFT:
        anomalies = tfdv.validate_statistics(current_stats, schema, previous_statistics=reference_stats)
    else:
        anomalies = tfdv.validate_statistics(reference_stats, schema, serving_statistics=current_stats)
    measurements: List[Dict[str, Any]] = []
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        for m in (info.drift_measurements if mode == DRIFT else info.skew_measurements):
            kind = type(m).Type.Name(m.type)
            measurements.append({"feature": feature, "measure": _MEASURES.get(kind, kind), "value": round(m.value, 6),
                                 "threshold": m.threshold, "moved": m.value > m.threshold})
    measurements += vanished
    if not measurements:
        raise NothingCompared(f"TFDV measured nothing to compare (columns compared: {columns}; anomalies: "
                              f"{dict((n, i.description) for n, i in anomalies.anomaly_info.items())})")
    measurements.sort(key=lambda m: m["feature"])
    return {"measurements": measurements, "moved": [m for m in measurements if m["moved"]],
            "not_compared": not_compared, "thresholds": vars(thresholds),
            "anomalies": {name: info.description for name, info in anomalies.anomaly_info.items()},
            "_statistics": (reference_stats, current_stats)}
