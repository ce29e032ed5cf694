"""ModelGate's keys, properties, files and artifact type name (one place for every reader)."""

EXAMPLES_KEY = "examples"
CANDIDATE_KEY = "candidate"
BASELINE_KEY = "baseline"
EVALUATION_KEY = "evaluation"
CHAMPION_KEY = "champion"  # optional: ChampionResolver's output (which version is served)
BLESSING_KEY = "blessing"
COMPARISON_KEY = "comparison"
COMPARISON_FILE = "comparison.json"
BLESSED_FILE = "BLESSED"  # TFX's Evaluator's marker files
NOT_BLESSED_FILE = "NOT_BLESSED"
COMPARISON_TYPE_NAME = "placedemarche.ModelComparison"
# Properties of the blessing the Pusher chooses by.
ACCURACY = "accuracy"
CANDIDATE_NAME = "candidate"
REASONS = "reasons"
