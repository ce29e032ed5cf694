"""BackboneFeatures' keys, properties and artifact type name (one place for every reader)."""

EXAMPLES_KEY = "examples"
FEATURES_KEY = "features"

# Execution parameters.
BACKBONE = "backbone"
WEIGHTS = "weights"
IMAGE_SIZE = "image_size"
VIEWS = "views"
SEED = "seed"
ALLOW_RANDOM_WEIGHTS = "allow_random_weights"
BATCH_SIZE = "batch_size"
WITH_TEST = "with_test"  # 1: the test split's pictures too (a tuned candidate's comparison)

FEATURES_TYPE_NAME = "placedemarche.BackboneFeatures"
SPLITS = ("train", "eval")
TEST_SPLIT = "test"
