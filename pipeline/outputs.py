"""Finding a run's executions and artifacts in the metadata store (ML Metadata).

TFX records every execution in three contexts: the pipeline's, the run's (``pipeline_run``, one per
``placedemarche run``) and the node's. Readers look at **one run**: the nodes' executions of the
latest run (or a run they name), never each node's latest execution across runs, which could mix a
push of one run with the gate of another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

_DONE = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
DONE_STATES = ("COMPLETE", "CACHED")  # an execution whose outputs can be read
RUN_CONTEXT_TYPE = "pipeline_run"


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


def run_contexts(store: metadata_store.MetadataStore, pipeline_name: str) -> List[metadata_store_pb2.Context]:
    """The pipeline's runs (``pipeline_run`` contexts), oldest first."""
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return []
    executions = store.get_executions_by_context(pipeline.id)
    runs: Dict[int, metadata_store_pb2.Context] = {}
    first_seen: Dict[int, tuple] = {}
    types = {t.id: t.name for t in store.get_context_types()}
    for e in executions:
        for c in store.get_contexts_by_execution(e.id):
            if types.get(c.type_id) == RUN_CONTEXT_TYPE:
                runs[c.id] = c
                first_seen[c.id] = min(first_seen.get(c.id, (e.create_time_since_epoch, e.id)),
                                       (e.create_time_since_epoch, e.id))
    return sorted(runs.values(), key=lambda c: first_seen[c.id])


def latest_run(store: metadata_store.MetadataStore, pipeline_name: str,
               with_node: Optional[str] = None) -> Optional[metadata_store_pb2.Context]:
    """The most recent run of the pipeline (that executed ``with_node``, when given), or None."""
    for run in reversed(run_contexts(store, pipeline_name)):
        if with_node is None or latest_node_run(store, pipeline_name, with_node, run) is not None:
            return run
    return None


def latest_node_run(
    store: metadata_store.MetadataStore, pipeline_name: str, node_id: str,
    run: Optional[metadata_store_pb2.Context] = None,
) -> Optional[NodeRun]:
    """The node's most recent execution (completed or not) — within ``run`` when given — or None."""
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
    if context is None:
        return None
    executions = store.get_executions_by_context(context.id)
    if run is not None:
        in_run = {e.id for e in store.get_executions_by_context(run.id)}
        executions = [e for e in executions if e.id in in_run]
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
