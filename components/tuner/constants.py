"""HeadTuner's keys, parameters and files (one place for every reader)."""

EXAMPLES_KEY = "examples"
SCHEMA_KEY = "schema"
FEATURES_KEY = "features"
# The output keys and file names of TFX's own Tuner, so that a reader of either finds the same things.
BEST_HYPERPARAMETERS_KEY = "best_hyperparameters"
TUNER_RESULTS_KEY = "tuner_results"
BEST_HYPERPARAMETERS_FILE = "best_hyperparameters.txt"  # KerasTuner HyperParameters.get_config() as JSON
TUNER_RESULTS_FILE = "tuner_results.json"  # completed trials, best first: trial_id, score, values
REPORT_FILE = "tuning.json"  # ours: defaults vs best values, eval accuracy of both, every trial, timings

# Execution parameters.
SPEC = "spec"  # JSON of components.trainer.trainer.TrainSpec (as the candidate's Trainer gets it)
TUNING = "tuning"  # JSON of search.TuningSettings

# The splits a Tuner reads. Never the test split: the gate's test accuracy must stay unbiased.
SPLITS = ("train", "eval")
