"""DriftGate's keys, parameters, properties, files and artifact type name (one place for every reader)."""

EXAMPLES_KEY = "examples"  # the ExampleGen's output: the gate runs after ingestion, on the same catalogue
DRIFT_KEY = "drift"

# Execution parameters (besides the catalogue's: data_dir, csv_file, images_dir, columns, label_depth).
LINF = "drift_linf"
JSD = "drift_jsd"
ACCEPT = "accept_drift"

# Properties of the DriftReport artifact.
COMPARED = "compared"  # 1: two batches were compared; 0: a single batch, nothing to compare
DRIFTED = "drifted"  # 1: something moved past its threshold
ACCEPTED = "accepted"  # 1: it drifted and data.accept_drift let the run go on
NEWEST = "newest_batch"
PREVIOUS = "previous_batch"

REPORT_FILE = "drift.json"
PREVIOUS_STATISTICS_FILE = "previous_statistics.pbtxt"  # TFDV statistics of the previous batch
NEWEST_STATISTICS_FILE = "newest_statistics.pbtxt"
DRIFT_TYPE_NAME = "placedemarche.DriftReport"
