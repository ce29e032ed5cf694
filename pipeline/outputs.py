"""Finding a run's artifacts in the metadata store (ML Metadata), for summaries and reviews."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

_DONE = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)


@dataclass(frozen=True)
class NodeRun:
    """The latest execution of one pipeline node and its output artifacts' URIs by output key."""

    node_id: str
    state: str  # COMPLETE, CACHED, FAILED, RUNNING ...
    execution_id: int
    outputs: Dict[str, List[str]] = field(default_factory=dict)
    seconds: float = 0.0  # from the execution's creation to its last update


def open_store(sqlite_path: str) -> metadata_store.MetadataStore:
    """A store over the local runner's SQLite file (this module only reads it)."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = sqlite_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    return metadata_store.MetadataStore(config)


def latest_node_run(
    store: metadata_store.MetadataStore, pipeline_name: str, node_id: str
) -> Optional[NodeRun]:
    """The node's most recent execution (completed or not), or None when it never ran."""
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
    if context is None:
        return None
    executions = store.get_executions_by_context(context.id)
    if not executions:
        return None
    latest = max(executions, key=lambda e: (e.create_time_since_epoch, e.id))
    outputs: Dict[str, List[str]] = {}
    events = store.get_events_by_execution_ids([latest.id])
    artifact_ids = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
    uris = {a.id: a.uri for a in store.get_artifacts_by_id(artifact_ids)}
    for event in events:
        if event.type != metadata_store_pb2.Event.OUTPUT:
            continue
        key = next((s.key for s in event.path.steps if s.HasField("key")), "")
        outputs.setdefault(key, []).append(uris[event.artifact_id])
    state = metadata_store_pb2.Execution.State.Name(latest.last_known_state)
    seconds = (latest.last_update_time_since_epoch - latest.create_time_since_epoch) / 1000.0
    return NodeRun(node_id, state, latest.id, outputs, seconds)


def count_executions(store: metadata_store.MetadataStore, pipeline_name: str, node_id: str) -> Dict[str, int]:
    """How many executions of the node ended in each state, e.g. ``{"COMPLETE": 1, "CACHED": 1}``."""
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
    counts: Dict[str, int] = {}
    for e in store.get_executions_by_context(context.id) if context else []:
        name = metadata_store_pb2.Execution.State.Name(e.last_known_state)
        counts[name] = counts.get(name, 0) + 1
    return counts
