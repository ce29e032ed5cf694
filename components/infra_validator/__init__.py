"""InfraValidator without Docker: the candidate loaded in a separate process, warm-up requests replayed."""
