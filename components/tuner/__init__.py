"""HeadTuner: KerasTuner search over a candidate's head on the cached backbone features."""
