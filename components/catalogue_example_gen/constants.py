"""CatalogueExampleGen's keys, files and artifact type name (one place for every reader)."""

EXAMPLES_KEY = "examples"
QUARANTINE_KEY = "quarantine"
UNLABELLED_KEY = "unlabelled"  # Examples of the rows without a category (one split, below)
UNLABELLED_SPLIT = "unlabelled"
QUARANTINE_FILE = "quarantine.json"  # list of {row, uniq_id, image, reason, detail}
SUMMARY_FILE = "summary.json"  # rows read, examples per split and label, quarantine by reason, text counts
QUARANTINE_TYPE_NAME = "placedemarche.QuarantineReport"
BATCHES_PROPERTY = "batches"  # Examples custom property: JSON list of the batch folders read (the window)
FIRST_SPAN_PROPERTY = "first_span"  # Examples custom property: the window's oldest span (``span``: its newest)
