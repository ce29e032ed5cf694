"""DataValidationGate: stops the pipeline before training when TFDV found any anomaly."""
