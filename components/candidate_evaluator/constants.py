"""CandidateEvaluator's keys and parameters (one place for every reader)."""

EXAMPLES_KEY = "examples"
BASELINE_KEY = "baseline_model"
MODEL_KIND = "model"  # one ``model__<candidate>`` input per candidate (components/candidate_inputs.py)
EVALUATION_KEY = "evaluation"

EVAL_CONFIG = "eval_config"  # tfma.EvalConfig as JSON
SPLIT = "split"
CHAMPION_KEY = "champion_model"  # optional: ChampionResolver's output (the served version, or nothing served)

# Properties of the evaluation about the champion.
CHAMPION_COMPARED = "champion_compared"  # 1: the served champion was evaluated with the candidates
CHAMPION_VERSION = "champion_version"  # its version (0: none)
CHAMPION_REASON = "champion_reason"  # in words: which version and why, or why it was not compared
