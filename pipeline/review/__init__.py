"""The blessing review: why each candidate was or was not blessed, which one was pushed and why; and
reviewer overrides.

- ``gather`` (``reading``): a run folder's candidates, baseline, gate checks, infra validation,
  push and reviewer decisions, as plain data (``run_reader`` does the reading).
- ``record_override`` (``overrides``): a reviewer pushes a candidate the gate did not bless, or
  rolls the served version back, recorded in the metadata store.
- ``render_text``, ``write_html``, ``to_json`` (``rendering``).
"""

from placedemarche.pipeline.review.overrides import (DECISION_TYPE, PUSH, ROLLBACK, list_overrides,
                                                     record_override)
from placedemarche.pipeline.review.reading import ReviewError, gather, serving_root
from placedemarche.pipeline.review.rendering import HTML_FILE, REVIEW_DIR, render_text, to_json, write_html

__all__ = ["DECISION_TYPE", "HTML_FILE", "PUSH", "REVIEW_DIR", "ROLLBACK", "ReviewError", "gather",
           "list_overrides", "record_override", "render_text", "serving_root", "to_json", "write_html"]
