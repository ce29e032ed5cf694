"""The blessing gate: each candidate against the baseline on the same test pictures (TFMA's results,
McNemar's paired test, the thresholds), as the ModelGate component and its decision library."""
