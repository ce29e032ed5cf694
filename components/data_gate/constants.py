"""DataValidationGate's keys, files and artifact type name (one place for every reader)."""

ANOMALIES_KEY = "anomalies"
RESULT_KEY = "result"
RESULT_FILE = "result.json"
RESULT_TYPE_NAME = "placedemarche.DataValidation"
