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
COMPUTE_DTYPE = "compute_dtype"  # training.compute_dtype: float32 (absent), bfloat16 or auto
SPLITS_PARAM = "splits"  # optional, comma-separated; absent: train and eval

FEATURES_TYPE_NAME = "placedemarche.BackboneFeatures"
SPLITS = ("train", "eval")
TEST_SPLIT = "test"
