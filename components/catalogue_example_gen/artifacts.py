"""The quarantine report artifact: every refused row with its reason, and the ingestion summary."""

from tfx.types.artifact import Artifact

QUARANTINE_FILE = "quarantine.json"  # list of {row, uniq_id, image, reason, detail}
SUMMARY_FILE = "summary.json"  # rows read, examples per split and label, quarantine by reason


class QuarantineReport(Artifact):
    """Rows of a catalogue that did not become examples, and why (``quarantine.json``), with the
    ingestion summary (``summary.json``)."""

    TYPE_NAME = "placedemarche.QuarantineReport"
