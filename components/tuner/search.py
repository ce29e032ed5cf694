"""The search: KerasTuner's oracle proposes head settings, each trial trains them on cached features.

Knows nothing of TFX: ``HeadTuner``'s executor reads the artifacts and calls :func:`tune`.

A trial is :func:`trainer.fit_classifiers` with the proposed values on the train split, early-stopped
and scored on the eval split (accuracy, then log loss to break ties), the best epoch kept in memory:
no backbone runs, so a trial costs the head's training only, and each epoch is one compiled function
(``train.train_head_fast``, 3x faster than Keras ``fit`` on these heads; the Trainer keeps ``fit``). The candidate's configured recipe is
trained first and scored the same way; the best values are the configured ones unless a trial beats
them, so tuning never picks a recipe that did worse on eval than the default. The test split is not
an input: the gate's test accuracy stays an unbiased estimate.

Algorithms are KerasTuner's oracles (``random``, ``bayesian``, ``hyperband``), seeded. Hyperband gives
each trial an epoch budget (``tuner/epochs``): the trial trains at most that many epochs from scratch
(no warm start from an earlier round); since those scores are not comparable with the default
recipe's full training, its best three values are trained again at the full epochs (``final-<n>``
trials) and the choice is made among those and the defaults. A failed trial is recorded and the
search goes on.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import keras_tuner as kt
from tqdm import tqdm

from placedemarche.components.trainer import train as train_lib
from placedemarche.components.trainer.trainer import TrainingData, TrainSpec, fit_classifiers
from placedemarche.components.trainer import space as space_lib

logger = logging.getLogger(__name__)

ALGORITHMS = ("random", "bayesian", "hyperband")
OBJECTIVE = "val_accuracy"
DEFAULT_TRIAL = "default"


@dataclass(frozen=True)
class TuningSettings:
    """How to search (the config's ``tuning`` section, less ``enabled``)."""

    max_trials: int = 20
    algorithm: str = "random"
    seed: int = 42

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"tuning.algorithm '{self.algorithm}' is not one of {', '.join(ALGORITHMS)}")
        if self.max_trials < 1:
            raise ValueError(f"tuning.max_trials must be at least 1, got {self.max_trials}")

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TuningSettings":
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


@dataclass
class Trial:
    trial_id: str
    values: Dict[str, Any]  # the searched settings (no KerasTuner bookkeeping)
    status: str  # COMPLETED / FAILED
    val_accuracy: Optional[float] = None
    val_loss: Optional[float] = None
    epochs: Optional[int] = None  # Hyperband's budget for the trial; None: the recipe's epochs
    epochs_run: Optional[int] = None
    seconds: float = 0.0
    error: Optional[str] = None

    @property
    def rank_key(self):
        return (-(self.val_accuracy or 0.0), self.val_loss if self.val_loss is not None else float("inf"))


@dataclass
class TuningResult:
    """What a search found: the best values (and their KerasTuner config), every trial, the defaults."""

    candidate: str
    algorithm: str
    seed: int
    max_trials: int
    defaults: Dict[str, Any]
    best_values: Dict[str, Any]
    best_trial: str  # a trial id, or "default"
    default: Trial
    trials: List[Trial] = field(default_factory=list)
    seconds: float = 0.0
    hyperparameters_config: Dict[str, Any] = field(default_factory=dict)  # best_hyperparameters.txt

    @property
    def best(self) -> Trial:
        return self.default if self.best_trial == DEFAULT_TRIAL else next(t for t in self.trials
                                                                          if t.trial_id == self.best_trial)

    def report(self) -> Dict[str, Any]:
        best = self.best
        return {
            "candidate": self.candidate, "algorithm": self.algorithm, "seed": self.seed, "max_trials": self.max_trials,
            "objective": f"{OBJECTIVE} on the eval split (ties: lower eval log loss)",
            "defaults": self.defaults, "best_values": self.best_values, "best_trial": self.best_trial,
            "changed": sorted(k for k in self.defaults if self.best_values.get(k) != self.defaults[k]),
            "default_val_accuracy": self.default.val_accuracy, "best_val_accuracy": best.val_accuracy,
            "trials_completed": sum(t.status == "COMPLETED" for t in self.trials),
            "trials_failed": sum(t.status == "FAILED" for t in self.trials),
            "seconds": round(self.seconds, 3),
            "trials": [asdict(self.default)] + [asdict(t) for t in self.trials],
        }

    def tuner_results(self) -> List[Dict[str, Any]]:
        """TFX's ``tuner_results.json`` rows: the completed trials, best first (``trial_id``, ``score``, values)."""
        done = sorted((t for t in [self.default] + self.trials if t.status == "COMPLETED"), key=lambda t: t.rank_key)
        return [{"trial_id": t.trial_id, "score": t.val_accuracy, "val_loss": t.val_loss, **t.values} for t in done]


HYPERBAND_FINALISTS = 3  # Hyperband's best values retrained at the full epochs before the choice


def _oracle(settings: TuningSettings, hp: kt.HyperParameters, max_epochs: int) -> kt.Oracle:
    objective = kt.Objective(OBJECTIVE, direction="max")
    # A failed trial (e.g. a vocabulary setting that leaves no token) is recorded and the search goes
    # on: KerasTuner's default would end the whole search after 3 failures in a row.
    common = dict(objective=objective, seed=settings.seed, hyperparameters=hp,
                  max_consecutive_failed_trials=settings.max_trials + 1)
    if settings.algorithm == "random":
        oracle = kt.oracles.RandomSearchOracle(max_trials=settings.max_trials, **common)
    elif settings.algorithm == "bayesian":
        # KerasTuner starts with 3 random points per searched setting (12 to 24 here), which would leave
        # 20 trials mostly random: a third of the trials, at least 2, are random; the rest are guided.
        initial = max(2, min(3 * len(hp.space), settings.max_trials // 3))
        oracle = kt.oracles.BayesianOptimizationOracle(max_trials=settings.max_trials, num_initial_points=initial,
                                                       **common)
    else:
        oracle = kt.oracles.HyperbandOracle(max_epochs=max(2, max_epochs), factor=3, **common)
    oracle.verbose = 0  # our own progress bar and log lines
    return oracle


def _run(spec: TrainSpec, data: TrainingData, trial_id: str, values: Dict[str, Any], epochs: Optional[int]) -> Trial:
    start = time.perf_counter()
    trial = Trial(trial_id, values, "COMPLETED", epochs=epochs)
    try:
        fitted = fit_classifiers(space_lib.apply(spec, values), data, None, epochs=epochs, quiet=True, trial=True)
    except (ValueError, MemoryError) as e:  # e.g. no token left, or rows too wide: that trial fails, the search goes on
        trial.status, trial.error = "FAILED", str(e)
        logger.warning("tuning trial %s %s failed: %s", trial_id, values, e)
        return trial
    trial.val_accuracy, trial.val_loss = fitted.val_accuracy, fitted.val_loss
    main = fitted.image or fitted.text
    trial.epochs_run = len(main.result.history.get("loss", []))
    trial.seconds = time.perf_counter() - start
    return trial


def tune(spec: TrainSpec, data: TrainingData, settings: TuningSettings, work_dir: Optional[str] = None) -> TuningResult:
    """Searches ``spec``'s head settings on ``data`` (train and eval only).

    Args:
      spec: the candidate's recipe as its Trainer gets it (its values are the defaults).
      data: from ``trainer.read_training_data`` (+ ``load_features`` for a candidate that reads pictures).
      settings: the algorithm, number of trials and seed.
      work_dir: where KerasTuner keeps its oracle's state (default: a temporary folder, removed).

    Returns:
      The best values, the default recipe's scores and every trial's.

    Raises:
      ValueError: the default recipe itself cannot be trained (e.g. no usable text token).
    """
    start = time.perf_counter()
    hp = space_lib.search_space(spec)
    defaults = space_lib.defaults(spec)
    default = _run(spec, data, DEFAULT_TRIAL, defaults, None)
    if default.status != "COMPLETED":
        raise ValueError(f"the configured recipe of candidate '{spec.name}' cannot be trained: {default.error}")
    logger.info("tuning %s: default recipe val accuracy %.4f (%.1f s); %d %s trials", spec.name,
                default.val_accuracy, default.seconds, settings.max_trials, settings.algorithm)
    trials: List[Trial] = []
    if spec.epochs == 0:  # an untrained head (a deliberately weak model): every value gives the same head
        logger.info("tuning %s: epochs is 0, nothing to tune; the defaults are kept", spec.name)
        return TuningResult(spec.name, settings.algorithm, settings.seed, settings.max_trials, defaults, dict(defaults),
                            DEFAULT_TRIAL, default, [], time.perf_counter() - start, hp.get_config())
    with tempfile.TemporaryDirectory(prefix="tuner-") as scratch:
        oracle = _oracle(settings, hp, spec.epochs)
        oracle._set_project_dir(work_dir or scratch, "search")  # KerasTuner's Tuner does the same
        with tqdm(total=settings.max_trials, desc=f"tuning {spec.name}", unit="trial", leave=False,
                  disable=bool(os.environ.get(train_lib.NO_PROGRESS_ENV))) as bar:
            while len(trials) < settings.max_trials:
                proposed = oracle.create_trial("placedemarche")
                if proposed.status != kt.engine.trial.TrialStatus.RUNNING:  # the oracle's space is exhausted
                    break
                raw = dict(proposed.hyperparameters.values)
                trial = _run(spec, data, f"{len(trials) + 1:03d}", space_lib.settings(raw), raw.get("tuner/epochs"))
                if trial.status == "COMPLETED":
                    oracle.update_trial(proposed.trial_id, {OBJECTIVE: trial.val_accuracy})
                    proposed.status = kt.engine.trial.TrialStatus.COMPLETED
                else:
                    proposed.status = kt.engine.trial.TrialStatus.FAILED
                    proposed.message = trial.error
                oracle.end_trial(proposed)
                trials.append(trial)
                logger.info("tuning %s trial %s: %s -> val accuracy %s (%.1f s)", spec.name, trial.trial_id,
                            trial.values, "failed" if trial.val_accuracy is None else f"{trial.val_accuracy:.4f}",
                            trial.seconds)
                bar.update(1)
    finalists = [t for t in trials if t.status == "COMPLETED"]
    if settings.algorithm == "hyperband" and finalists:
        # Hyperband's scores are at reduced epoch budgets (2 epochs in its first bracket), not comparable
        # with the default recipe's full training: its best values are retrained at the full epochs.
        best_values: List[Dict[str, Any]] = []
        for t in sorted(finalists, key=lambda t: t.rank_key):
            if t.values not in best_values:
                best_values.append(t.values)
        finalists = []
        for i, values in enumerate(best_values[:HYPERBAND_FINALISTS]):
            trial = _run(spec, data, f"final-{i + 1}", values, None)
            trials.append(trial)
            if trial.status == "COMPLETED":
                finalists.append(trial)
    best = min([default] + finalists, key=lambda t: t.rank_key)
    best_hp = space_lib.search_space(spec)
    best_hp.values.update(best.values)
    result = TuningResult(spec.name, settings.algorithm, settings.seed, settings.max_trials, defaults, dict(best.values),
                          best.trial_id, default, trials, time.perf_counter() - start, best_hp.get_config())
    logger.info("tuning %s: best %s (val accuracy %.4f, default %.4f) after %d trials in %.1f s", spec.name,
                best.trial_id, best.val_accuracy, default.val_accuracy, len(trials), result.seconds)
    return result
