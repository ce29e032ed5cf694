"""HeadTrainer's keys and parameters (one place for every reader)."""

EXAMPLES_KEY = "examples"
SCHEMA_KEY = "schema"
FEATURES_KEY = "features"
TEST_FEATURES_KEY = "test_features"  # a tuned candidate's test pictures, for its default-vs-tuned report
HYPERPARAMETERS_KEY = "hyperparameters"
MODEL_KEY = "model"
MODEL_RUN_KEY = "model_run"

# Execution parameters.
SPEC = "spec"  # JSON of components.trainer.trainer.TrainSpec
ROLE = "role"  # "candidate" or "baseline"

HISTORY_FILE = "history.json"
HISTORY_PLOT = "history.png"
