"""Reviewer decisions: push a candidate the gate did not bless, or roll the served version back.

Each decision is an ML Metadata execution of type ``placedemarche.ReviewerDecision`` in the
pipeline's context and the context of the run it concerns, with the published folder as its output
artifact and the source as its input. It is recorded **before** the publish (state RUNNING), then
the model is published, then the record is completed with the served version (or marked FAILED
with the error): a served model always has its decision on record.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2

from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.pipeline import outputs
from placedemarche.pipeline import pipeline as pipeline_lib
from placedemarche.pipeline import run_reader
from placedemarche.pipeline.config import PipelineConfig
from placedemarche.pipeline.review.reading import ReviewError, serving_root

DECISION_TYPE = "placedemarche.ReviewerDecision"
PUSH = "push"
ROLLBACK = "rollback"
_STRING_PROPERTIES = ("action", "user", "reason", "time", "source", "destination", "candidate")


def record_override(
    config: PipelineConfig,
    run_dir: Path,
    action: str,
    reason: str,
    user: Optional[str] = None,
    rollback_to: Optional[int] = None,
    candidate: Optional[str] = None,
) -> Dict[str, Any]:
    """Carries out a reviewer's decision and records it in the run's metadata store.

    ``action`` is ``push`` (publish a candidate of the latest evaluated run as the next version
    although it was not blessed: ``candidate``, default the best one by test accuracy) or
    ``rollback`` (publish the content of version ``rollback_to`` again as the next version, which TF
    Serving then serves; earlier versions are never deleted). Returns the record.

    Raises:
      ReviewError: empty reason, unknown action, candidate or version, or nothing to push.
    """
    from placedemarche.pipeline.review.reading import gather

    if not reason or not reason.strip():
        raise ReviewError("a reason is required: say why, it is stored with the decision")
    if action not in (PUSH, ROLLBACK):
        raise ReviewError(f"unknown action '{action}': use '{PUSH}' or '{ROLLBACK}'")
    run_dir = Path(run_dir).resolve()
    store = run_reader.open_store(run_dir)
    user = user or os.environ.get("USER") or getpass.getuser()
    base = os.path.join(serving_root(config, run_dir), config.serving.model_name)
    run = None
    if action == PUSH:
        review = gather(config, run_dir)  # the latest evaluated run, read as one
        names = [c["name"] for c in review["candidates"]]
        candidate = candidate or review["candidate"]["name"]
        if candidate not in names:
            raise ReviewError(f"--candidate {candidate}: not a candidate evaluated in {run_dir} (candidates: "
                              f"{', '.join(names)})")
        entry = next(c for c in review["candidates"] if c["name"] == candidate)
        if not entry.get("model"):
            raise ReviewError(f"the Trainer of candidate '{candidate}' has not completed in {run_dir}: nothing to push")
        run = outputs.latest_run(store, config.name, pipeline_lib.gate_id(candidate))
        infra = entry.get("infra_validation") or {}
        source = _validated_copy(infra.get("blessing")) if infra.get("passed") else None
        source = source or entry["model"]
    else:
        existing = push_lib.versions(base)
        if rollback_to is None or rollback_to not in existing:
            raise ReviewError(f"--rollback-to {rollback_to}: no such version under {base} (versions: {existing})")
        source = os.path.join(base, str(rollback_to))
        candidate = ""
    record: Dict[str, Any] = {
        "action": action, "user": user, "reason": reason.strip(), "candidate": candidate or "",
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source, "destination": "", "served_version": 0, "rollback_to": rollback_to,
    }
    execution_id = _begin(store, config, run, record)
    try:
        # A rollback republishes an old version on purpose; a push of what is already served is a no-op.
        destination, _ = push_lib.push(source, serving_root(config, run_dir), config.serving.model_name,
                                       force=action == ROLLBACK)
    except Exception as e:
        _finish(store, execution_id, record, error=f"{type(e).__name__}: {e}")
        raise ReviewError(f"the {action} failed and is recorded as failed: {e}") from e
    record.update(destination=destination, served_version=int(Path(destination).name))
    _finish(store, execution_id, record)
    return record


def _validated_copy(blessing_uri: Optional[str]) -> Optional[str]:
    """The infra-validated copy (with warm-up requests) of a candidate, when validation passed."""
    from tfx.utils import path_utils

    if not blessing_uri:
        return None
    staged = path_utils.stamped_model_path(blessing_uri)
    return staged if os.path.isdir(staged) else None


def _execution_type(store) -> int:
    execution_type = metadata_store_pb2.ExecutionType(name=DECISION_TYPE)
    for key in _STRING_PROPERTIES:
        execution_type.properties[key] = metadata_store_pb2.STRING
    execution_type.properties["served_version"] = metadata_store_pb2.INT
    return store.put_execution_type(execution_type, can_add_fields=True)


def _begin(store, config: PipelineConfig, run, record: Dict[str, Any]) -> int:
    """Records the decision (state RUNNING) in the pipeline's and the concerned run's contexts."""
    execution = metadata_store_pb2.Execution(type_id=_execution_type(store),
                                             last_known_state=metadata_store_pb2.Execution.RUNNING)
    _set_properties(execution, record)
    contexts = [c for c in [store.get_context_by_type_and_name("pipeline", config.name), run] if c is not None]
    execution_id, _, _ = store.put_execution(execution, artifact_and_events=[], contexts=contexts,
                                             reuse_context_if_already_exist=True)
    # Lineage: the source folder is an artifact's (a pushed version) or inside one (stamped_model/, Format-Serving/).
    inputs = store.get_artifacts_by_uri(record["source"]) or store.get_artifacts_by_uri(os.path.dirname(record["source"]))
    if inputs:
        store.put_events([metadata_store_pb2.Event(artifact_id=inputs[0].id, execution_id=execution_id,
                                                   type=metadata_store_pb2.Event.INPUT)])
    return execution_id


def _set_properties(execution, record: Dict[str, Any]) -> None:
    for key in _STRING_PROPERTIES:
        execution.properties[key].string_value = str(record.get(key) or "")
    execution.properties["served_version"].int_value = int(record.get("served_version") or 0)
    if record.get("rollback_to") is not None:
        execution.custom_properties["rollback_to"].int_value = record["rollback_to"]


def _finish(store, execution_id: int, record: Dict[str, Any], error: Optional[str] = None) -> None:
    """Completes the decision with the served version and the published folder, or marks it FAILED."""
    [execution] = store.get_executions_by_id([execution_id])
    _set_properties(execution, record)
    if error:
        execution.last_known_state = metadata_store_pb2.Execution.FAILED
        execution.custom_properties["error"].string_value = error
        store.put_execution(execution, artifact_and_events=[], contexts=[])
        return
    execution.last_known_state = metadata_store_pb2.Execution.COMPLETE
    pushed_type = store.get_artifact_type("PushedModel")
    pushed = metadata_store_pb2.Artifact(type_id=pushed_type.id, uri=record["destination"],
                                         state=metadata_store_pb2.Artifact.LIVE)
    pushed.custom_properties["pushed"].int_value = 1
    pushed.custom_properties["pushed_version"].int_value = record["served_version"]
    pushed.custom_properties["pushed_destination"].string_value = record["destination"]
    store.put_execution(execution, artifact_and_events=[
        (pushed, metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT))], contexts=[])


def list_overrides(config: PipelineConfig, run_dir: Path) -> List[Dict[str, Any]]:
    """Every reviewer decision stored for this pipeline, oldest first (with its state)."""
    store = run_reader.open_store(Path(run_dir))
    try:
        execution_type = store.get_execution_type(DECISION_TYPE)
    except Exception:  # NotFoundError: no decision was ever recorded
        return []
    context = store.get_context_by_type_and_name("pipeline", config.name)
    if context is None:
        return []
    decisions = []
    for e in sorted(store.get_executions_by_context(context.id), key=lambda e: e.id):
        if e.type_id != execution_type.id:
            continue
        item: Dict[str, Any] = {k: v.string_value for k, v in e.properties.items() if k != "served_version"}
        item["served_version"] = e.properties["served_version"].int_value
        if "rollback_to" in e.custom_properties:
            item["rollback_to"] = e.custom_properties["rollback_to"].int_value
        item["state"] = metadata_store_pb2.Execution.State.Name(e.last_known_state)
        if "error" in e.custom_properties:
            item["error"] = e.custom_properties["error"].string_value
        item["execution_id"] = e.id
        decisions.append(item)
    return decisions
