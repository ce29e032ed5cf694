"""LocalInfraValidator's keys, properties and marker files (TFX InfraValidator's names, where it has them)."""

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
MODEL_BLESSING_KEY = "model_blessing"  # the model gate's verdict: a model it did not bless is not probed
BLESSING_KEY = "blessing"
RESULT_FILE = "infra_validation.json"
BLESSED_FILE = "INFRA_BLESSED"
NOT_BLESSED_FILE = "INFRA_NOT_BLESSED"
# The custom property TFX's Pusher reads to push the warmed-up copy (TFX's own InfraValidator sets it).
HAS_MODEL = "has_model"
SKIPPED = "skipped"
LATENCY_P50 = "latency_p50_ms"
SKIPPED_REASON = "skipped: the model gate did not bless this model"
