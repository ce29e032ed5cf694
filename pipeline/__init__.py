"""The Place de Marche pipeline package: configuration, CLI, sample data and the TFX pipeline graph."""
