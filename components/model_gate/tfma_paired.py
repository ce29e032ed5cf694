"""A TFMA metric over both models at once: the paired outcomes McNemar's test needs.

For each test example, is the candidate right, is the baseline right? TFMA's standard metrics are
per model; this one reads both models' predictions of the same example in one pass (as TFMA's own
``ModelCosineSimilarity`` does), so the gate needs no second inference run. Keys (model = the
candidate, ``is_diff``): ``paired_candidate_only_correct``, ``paired_baseline_only_correct``,
``paired_both_correct``, ``paired_both_wrong``.

With ``against`` (a model's name in the EvalConfig, e.g. the served champion) the other side is that
model instead of the baseline, and the keys start with the metric's name: ``name="champion_paired",
against="champion"`` gives ``champion_paired_candidate_only_correct`` etc. ("baseline" in the
outcome's name is then the ``against`` model).

Loaded by the Evaluator through ``MetricConfig(class_name="PairedOutcomes", module=__name__)``
(with ``config='"name": ..., "against": ...'`` for another model).
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.utils import model_util

PREFIX = "paired_"
OUTCOMES = ("candidate_only_correct", "baseline_only_correct", "both_correct", "both_wrong")


class PairedOutcomes(metric_types.Metric):
    """Counts of examples by (candidate right?, baseline right?), arg-max prediction vs label."""

    def __init__(self, name: str = "paired", against: str = ""):
        super().__init__(self._computations, name=name, against=against)

    def _computations(self, name, against, eval_config, model_names: Iterable[str],
                      output_names: Optional[Iterable[str]] = ("",), sub_keys=None):
        baseline = model_util.get_baseline_model_spec(eval_config)
        if baseline is None:
            raise ValueError("PairedOutcomes needs a baseline model (ModelSpec.is_baseline)")
        other = against or baseline.name
        if other not in [s.name for s in eval_config.model_specs]:
            raise ValueError(f"PairedOutcomes against '{other}': no such model in the evaluation")
        prefix = f"{name}_" if against else PREFIX
        computations = []
        for candidate in model_names:
            if candidate in (baseline.name, other):
                continue
            for output_name in output_names or ("",):
                keys = {o: metric_types.MetricKey(name=f"{prefix}{o}", model_name=candidate, output_name=output_name,
                                                  is_diff=True) for o in OUTCOMES}
                computations.append(metric_types.MetricComputation(
                    keys=list(keys.values()), preprocessors=None,
                    combiner=_PairedCombiner(keys, eval_config, candidate, other, output_name)))
        return computations


class _PairedCombiner(beam.CombineFn):
    def __init__(self, keys: Dict[str, metric_types.MetricKey], eval_config, candidate: str, baseline: str,
                 output_name: str):
        self._keys, self._eval_config = keys, eval_config
        self._candidate, self._baseline, self._output_name = candidate, baseline, output_name

    def create_accumulator(self):
        return np.zeros(4, dtype=np.int64)

    def _correct(self, element, model_name) -> bool:
        label, prediction, _ = next(metric_util.to_label_prediction_example_weight(
            inputs=element, eval_config=self._eval_config, model_name=model_name,
            output_name=self._output_name, flatten=False, allow_none=True))
        label, prediction = np.asarray(label).reshape(-1), np.asarray(prediction).reshape(-1)
        # A sparse label (the class id TFMA mapped the string label to) or a one-hot one.
        true_class = int(label[0]) if label.size == 1 else int(np.argmax(label))
        return int(np.argmax(prediction)) == true_class

    def add_input(self, accumulator, element):
        candidate, baseline = self._correct(element, self._candidate), self._correct(element, self._baseline)
        index = 0 if candidate and not baseline else 1 if baseline and not candidate else 2 if candidate else 3
        accumulator[index] += 1
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        result = next(accumulators).copy()
        for a in accumulators:
            result += a
        return result

    def extract_output(self, accumulator):
        return {self._keys[o]: float(accumulator[i]) for i, o in enumerate(OUTCOMES)}


metric_types.register_metric(PairedOutcomes)
