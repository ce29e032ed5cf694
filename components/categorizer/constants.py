"""The categoriser's keys, output files and their columns, in one place (the component, the CLI, the
tests and the reviews reader use these names)."""

# BatchCategorizer's channels and artifact type
UNLABELLED_KEY = "unlabelled"
PUSHED_KEY = "pushed_model"
CATEGORIZED_KEY = "categorized"
CATEGORIZATION_TYPE_NAME = "placedemarche.Categorization"
SKIPPED_FILE = "SKIPPED"  # written instead of the CSV files when nothing was pushed

PREDICTIONS_FILE = "predictions.csv"
REJECTED_FILE = "rejected.csv"
REVIEW_QUEUE_FILE = "review_queue.csv"
SUMMARY_FILE = "summary.json"

TOP_K = 3
SUSPECT = "seller_category_suspect"
LOW_CONFIDENCE = "low_confidence"
REVIEWED_CATEGORY = "reviewed_category"  # the column a reviewer fills in the queue


def _top_columns():
    return [c for i in range(1, TOP_K + 1) for c in (f"top{i}_category", f"top{i}_probability")]


PREDICTION_COLUMNS = (["uniq_id", "predicted_category", "probability"] + _top_columns()
                      + ["model_name", "model_version", "seller_category", SUSPECT])
REJECTED_COLUMNS = ["uniq_id", "row", "image", "reason", "detail"]
# Highest stakes first: see ``categorize.queue_order``.
REVIEW_QUEUE_COLUMNS = (["uniq_id", "why", "seller_category", "predicted_category", "probability"] + _top_columns()
                        + ["image", "product_name", REVIEWED_CATEGORY])
