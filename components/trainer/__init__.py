"""The Trainers: one shared model module (backbones, cached features, text, fusion, heads, export) and
the ``HeadTrainer`` component that runs it for each candidate and for the baseline."""
