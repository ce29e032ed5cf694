"""Which model is being served: the champion a run's candidates are compared with. No TFX.

Read from the serving folder itself, so reviewers' overrides and rollbacks count (TFX's
``LatestBlessedModelStrategy`` would pick the latest *blessed* model instead, which is not what a
rollback serves): the ``stable`` label's version when ``serving.stable_version`` is set, else the
highest complete version under ``serving_root/model_name`` (what TF Serving's default ``latest``
policy loads). Only versions with the push's completion marker count. Not handled: a TF Serving
configured with a ``canary`` label and no ``stable`` one serves the canary only; set
``serving.stable_version`` to the version clients get.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence

from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.serving import model_contract

STABLE = "stable label"
HIGHEST = "highest version"
NOTHING = "nothing served"


class ChampionError(RuntimeError):
    """The configuration names a champion that is not served (the stable version is missing)."""


@dataclass(frozen=True)
class Champion:
    version: int  # 0: nothing served
    path: str  # the version folder ("" when nothing is served)
    how: str  # STABLE, HIGHEST or NOTHING
    reason: str

    @property
    def served(self) -> bool:
        return self.version > 0

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "served": self.served}


def resolve(serving_root: str, model_name: str, stable_version: Optional[int] = None) -> Champion:
    """The served version under ``serving_root/model_name``.

    Raises:
      ChampionError: ``stable_version`` is set but is not a complete version there.
    """
    base = os.path.join(serving_root, model_name)
    complete = push_lib.complete_versions(base)
    if stable_version and not complete:
        return Champion(0, "", NOTHING, f"first run: nothing is served under {base} yet (serving.stable_version="
                                        f"{stable_version} names a version still to come), so there is no champion "
                                        "to compare with")
    if stable_version:
        if stable_version not in complete:
            raise ChampionError(
                f"serving.stable_version={stable_version} but {base} has no complete version {stable_version} "
                f"(complete versions: {complete or 'none'}): set serving.stable_version to a served version, "
                "or unset it to compare with the highest version")
        return Champion(stable_version, os.path.join(base, str(stable_version)), STABLE,
                        f"version {stable_version} of {base} (the 'stable' label, serving.stable_version)")
    if not complete:
        return Champion(0, "", NOTHING, f"first run: nothing is served under {base}, so there is no champion to "
                                        "compare with")
    return Champion(complete[-1], os.path.join(base, str(complete[-1])), HIGHEST,
                    f"version {complete[-1]} of {base} (the highest complete version: what TF Serving's 'latest' "
                    "policy serves)")


def serving_state(serving_root: str, model_name: str, stable_version: Optional[int] = None) -> str:
    """A fingerprint of what is served (complete versions, their push digests, the stable label): an
    execution parameter, so TFX's cache resolves the champion again when the serving folder changed."""
    base = os.path.join(serving_root, model_name)
    state: Dict[str, Any] = {"stable": stable_version or 0, "versions": {}}
    import tensorflow as tf

    for version in push_lib.complete_versions(base):
        try:
            marker = os.path.join(base, str(version), model_contract.ASSETS_EXTRA, model_contract.COMPLETE_MARKER)
            with tf.io.gfile.GFile(marker) as f:
                state["versions"][str(version)] = json.loads(f.read()).get("digest", "")
        except (OSError, ValueError, tf.errors.OpError):
            state["versions"][str(version)] = "unreadable"
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def not_comparable(champion_dir: str, labels: Sequence[str]) -> Optional[str]:
    """None when the champion can be evaluated on this run's test split; else why not (a champion
    trained on other categories answers in another label space: its accuracy is not comparable)."""
    import tensorflow as tf

    try:
        champion_labels = model_contract.read_labels(champion_dir)
    except (OSError, tf.errors.OpError) as e:
        return f"its labels cannot be read ({e})"
    if list(champion_labels) != list(labels):
        return (f"it knows the categories {champion_labels}, this run's models {list(labels)}: a champion trained on "
                "other categories is not compared")
    return None
