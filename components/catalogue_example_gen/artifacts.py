"""The quarantine report artifact: every refused row with its reason, and the ingestion summary."""

from tfx.types.artifact import Artifact

from placedemarche.components.catalogue_example_gen.constants import (  # noqa: F401 (re-exported)
    QUARANTINE_FILE, QUARANTINE_TYPE_NAME, SUMMARY_FILE)


class QuarantineReport(Artifact):
    """Rows of a catalogue that did not become examples, and why (``quarantine.json``), with the
    ingestion summary (``summary.json``)."""

    TYPE_NAME = QUARANTINE_TYPE_NAME
