"""Serving tools for the pushed model (TF Serving clients, configuration, local server)."""
