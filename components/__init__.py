"""Custom TFX components, one package each (``components/<name>/{component,executor}.py``)."""
