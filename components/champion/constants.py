"""ChampionResolver's keys, parameters, properties and files (one place for every reader)."""

CHAMPION_KEY = "champion"  # output: a standard Model artifact describing the served version

# Execution parameters.
SERVING_ROOT = "serving_root"
MODEL_NAME = "model_name"
STABLE_VERSION = "stable_version"  # 0: no 'stable' label
SERVING_STATE = "serving_state"  # what was served when the pipeline was built (keeps TFX's cache honest)

# Properties of the champion artifact.
SERVED = "served"  # 1: a version is served; 0: nothing is (the first run)
VERSION = "version"  # the served version (0 when nothing is served)
HOW = "how"  # "stable label" | "highest version" | "nothing served"
PATH = "path"  # the version folder (a pushed version is never rewritten: it is read in place)
REASON = "reason"  # in words, for review

CHAMPION_FILE = "champion.json"

# The champion's name in the TFMA evaluation, and its paired outcomes' metric name there.
MODEL_SPEC_NAME = "champion"
PAIRED_METRIC = "champion_paired"
