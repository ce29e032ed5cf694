"""CandidateEvaluator: every candidate and the baseline (and, later, the served champion) on the test
split in ONE TFMA pass."""
