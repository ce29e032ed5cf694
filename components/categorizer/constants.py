"""The categoriser's output files and their columns, in one place (the CLI, the tests and the reviews
reader use these names)."""

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
