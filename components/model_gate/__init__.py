"""The blessing decision: candidate vs baseline on the same test pictures (work in progress: the
metrics and decision library is here; the TFX component that feeds it is not built yet)."""
