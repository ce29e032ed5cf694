"""Reading TFDV results (ExampleValidator's anomalies, StatisticsGen's statistics); no TFX here."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

ANOMALIES_FILE = "SchemaDiff.pb"  # ExampleValidator's file in each Split-<name>/ folder
STATISTICS_FILE = "FeatureStats.pb"  # StatisticsGen's


@dataclass(frozen=True)
class Finding:
    """One anomaly: which split and feature, TFDV's short name and its full description."""

    split: str
    feature: str
    short: str
    description: str

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"split '{self.split}', feature '{self.feature}': {self.short} ({self.description})"


def read_anomalies(uri: str, splits: Sequence[str]) -> List[Finding]:
    """Every anomaly ExampleValidator recorded under ``uri`` for ``splits``.

    Raises:
      FileNotFoundError: a split has no anomalies file (ExampleValidator did not run on it).
    """
    findings: List[Finding] = []
    for split in splits:
        path = os.path.join(uri, f"Split-{split}", ANOMALIES_FILE)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"no anomalies file for split '{split}' at {path}")
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
        for feature, info in sorted(anomalies.anomaly_info.items()):
            findings.append(Finding(split, feature, info.short_description, info.description))
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            findings.append(Finding(split, "(dataset)", info.short_description, info.description))
    return findings


def read_statistics(uri: str, split: str) -> statistics_pb2.DatasetFeatureStatistics:
    """StatisticsGen's statistics of one split."""
    path = os.path.join(uri, f"Split-{split}", STATISTICS_FILE)
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    stats.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
    return stats.datasets[0]


def string_value_counts(stats: statistics_pb2.DatasetFeatureStatistics, feature: str) -> Dict[str, int]:
    """Counts of each value of a string feature, as StatisticsGen recorded them (its top values)."""
    for f in stats.features:
        name = f.path.step[-1] if f.path.step else f.name
        if name == feature:
            return {
                b.label: int(b.sample_count)
                for b in f.string_stats.rank_histogram.buckets
            }
    raise KeyError(f"feature '{feature}' not in the statistics")
