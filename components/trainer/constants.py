"""HeadTrainer's keys and parameters (one place for every reader)."""

EXAMPLES_KEY = "examples"
SCHEMA_KEY = "schema"
FEATURES_KEY = "features"
HYPERPARAMETERS_KEY = "hyperparameters"
MODEL_KEY = "model"
MODEL_RUN_KEY = "model_run"

# Execution parameters.
SPEC = "spec"  # JSON of components.trainer.trainer.TrainSpec
ROLE = "role"  # "candidate" or "baseline"

HISTORY_FILE = "history.json"
HISTORY_PLOT = "history.png"
