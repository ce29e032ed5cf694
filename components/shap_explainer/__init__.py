"""SHAP explanations of the candidate: a TFX component and the library behind ``placedemarche explain``."""
