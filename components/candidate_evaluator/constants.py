"""CandidateEvaluator's keys and parameters (one place for every reader)."""

EXAMPLES_KEY = "examples"
BASELINE_KEY = "baseline_model"
MODEL_KIND = "model"  # one ``model__<candidate>`` input per candidate (components/candidate_inputs.py)
EVALUATION_KEY = "evaluation"

EVAL_CONFIG = "eval_config"  # tfma.EvalConfig as JSON
SPLIT = "split"
