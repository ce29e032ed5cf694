"""Categorising a catalogue with a pushed model: predictions, suspicious seller categories, a review queue."""
