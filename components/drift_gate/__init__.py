"""DriftGate: stops the pipeline before training when the newest catalogue batch drifted from the previous one."""
