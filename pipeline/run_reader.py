"""One typed reader of a run folder: what ``run``'s summary and ``review`` both show.

``read(config, run_dir)`` opens ``RUN_DIR/metadata.sqlite`` and reads **one run** of the pipeline
(the latest, or the latest that reached a given node; see ``outputs``): each node's state and time,
the backbone features, every trained model (its metadata and training history), each candidate's
gate comparison and infra validation, the Pusher's selection and push, and the explanations. Plain
data classes; nothing here renders or writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from placedemarche.components.backbone_features import constants as features_constants
from placedemarche.components.catalogue_example_gen import constants as example_gen_constants
from placedemarche.components.categorizer import constants as categorizer_constants
from placedemarche.components.drift_gate import constants as drift_constants
from placedemarche.components.infra_validator import constants as infra_constants
from placedemarche.components.model_gate import constants as gate_constants
from placedemarche.components.serving_pusher import constants as pusher_constants
from placedemarche.components.shap_explainer import constants as explain_constants
from placedemarche.components.trainer import constants as trainer_constants
from placedemarche.pipeline import outputs
from placedemarche.pipeline import pipeline as pipeline_lib
from placedemarche.pipeline.config import PipelineConfig
from placedemarche.serving import model_contract

METADATA_FILE = "metadata.sqlite"


class RunNotFound(RuntimeError):
    """The folder is not a run folder, or the pipeline has not run there."""


def metadata_path(run_dir: Path) -> Path:
    return Path(run_dir) / METADATA_FILE


@dataclass
class NodeState:
    node: str
    state: str  # COMPLETE, CACHED, FAILED, RUNNING, NOT RUN
    seconds: Optional[float]


@dataclass
class TrainedModel:
    """A Trainer's output: the SavedModel folder, its metadata and its training curves."""

    node: str
    state: str
    model_dir: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    history: Optional[Dict[str, Any]] = None  # history.json

    @property
    def done(self) -> bool:
        return self.state in outputs.DONE_STATES and self.model_dir is not None


@dataclass
class CandidateRun:
    """One candidate's Trainer, gate comparison and infra validation in the run."""

    name: str
    model: TrainedModel
    gate_state: str
    comparison: Optional[Dict[str, Any]] = None  # comparison.json
    comparison_uri: Optional[str] = None
    infra: Optional[Dict[str, Any]] = None  # infra_validation.json plus passed / skipped / blessing uri


@dataclass
class RunInfo:
    run_dir: str
    pipeline: str
    run_id: Optional[str]
    nodes: List[NodeState]
    features: Dict[str, Dict[str, Any]]  # node id -> features.json
    baseline: TrainedModel
    candidates: Dict[str, CandidateRun]
    push: Optional[Dict[str, Any]]  # selection.json plus pushed / version / destination / reason
    explanations: Optional[Dict[str, Any]]
    categorized: Optional[Dict[str, Any]] = None  # BatchCategorizer's summary.json plus its folder
    ingestion: Optional[Dict[str, Any]] = None  # CatalogueExampleGen's summary.json (reviews applied included)
    drift: Optional[Dict[str, Any]] = None  # DriftGate's drift.json plus its folder (when the gate passed)

    def node_state(self, node: str) -> str:
        return next((n.state for n in self.nodes if n.node == node), "NOT RUN")


def open_store(run_dir: Path):
    path = metadata_path(run_dir)
    if not path.exists():
        raise RunNotFound(f"no metadata store at {path}: is {run_dir} a run folder of 'placedemarche run'?")
    return outputs.open_store(str(path))


def _done_output(node: Optional[outputs.NodeRun], key: str) -> Optional[str]:
    if node is None or node.state not in outputs.DONE_STATES or key not in node.outputs:
        return None
    return node.outputs[key][0]


def _json(path: Path) -> Optional[Dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _model(store, config: PipelineConfig, node_id: str, run) -> TrainedModel:
    node = outputs.latest_node_run(store, config.name, node_id, run)
    model = TrainedModel(node_id, node.state if node else "NOT RUN")
    uri = _done_output(node, trainer_constants.MODEL_KEY)
    if uri:
        model.model_dir = model_contract.serving_dir(uri)
        model.metadata = model_contract.read_metadata(model.model_dir)
        run_uri = _done_output(node, trainer_constants.MODEL_RUN_KEY)
        model.history = _json(Path(run_uri, trainer_constants.HISTORY_FILE)) if run_uri else None
    return model


def _infra(node: Optional[outputs.NodeRun]) -> Optional[Dict[str, Any]]:
    uri = _done_output(node, infra_constants.BLESSING_KEY)
    if uri is None:
        return None
    result = _json(Path(uri, infra_constants.RESULT_FILE)) or {}
    return {**result, "passed": Path(uri, infra_constants.BLESSED_FILE).exists(), "skipped": bool(result.get("skipped")),
            "blessing": uri}


def read(config: PipelineConfig, run_dir: Path, with_node: Optional[str] = None) -> RunInfo:
    """The latest run in ``run_dir`` (the latest that executed ``with_node``, when given).

    Raises:
      RunNotFound: no metadata store, or no run of the pipeline (with that node) in it.
    """
    run_dir = Path(run_dir).resolve()
    store = open_store(run_dir)
    run = outputs.latest_run(store, config.name, with_node)
    if run is None:
        raise RunNotFound(f"no run of pipeline '{config.name}'" + (f" reached {with_node}" if with_node else "")
                          + f" in {run_dir}")
    nodes = []
    for node_id in pipeline_lib.node_ids(config):
        node = outputs.latest_node_run(store, config.name, node_id, run)
        nodes.append(NodeState(node_id, node.state if node else "NOT RUN", round(node.seconds, 1) if node else None))
    features = {}
    for node_id in pipeline_lib.feature_groups(config):
        uri = _done_output(outputs.latest_node_run(store, config.name, node_id, run),
                           features_constants.FEATURES_KEY)
        if uri:
            features[node_id] = {**(_json(Path(uri, "features.json")) or {}), "uri": uri}
    candidates = {}
    for c in config.enabled_candidates:
        gate = outputs.latest_node_run(store, config.name, pipeline_lib.gate_id(c.name), run)
        comparison_uri = _done_output(gate, gate_constants.COMPARISON_KEY)
        candidates[c.name] = CandidateRun(
            c.name, _model(store, config, pipeline_lib.trainer_id(c.name), run), gate.state if gate else "NOT RUN",
            _json(Path(comparison_uri, gate_constants.COMPARISON_FILE)) if comparison_uri else None, comparison_uri,
            _infra(outputs.latest_node_run(store, config.name, pipeline_lib.infra_id(c.name), run)),
        )
    push = None
    pushed_uri = _done_output(outputs.latest_node_run(store, config.name, pipeline_lib.PUSHER, run),
                              pusher_constants.PUSHED_KEY)
    if pushed_uri:
        push = _json(Path(pushed_uri, pusher_constants.SELECTION_FILE)) or {}
        marker = Path(pushed_uri, pusher_constants.PUSHED_FILE)
        not_pushed = Path(pushed_uri, pusher_constants.NOT_PUSHED_FILE)
        if marker.exists():
            destination = marker.read_text(encoding="utf-8").strip()
            push.update(pushed=True, destination=destination, version=int(Path(destination).name))
        else:
            push.update(pushed=False, reason=not_pushed.read_text(encoding="utf-8").strip() if not_pushed.exists()
                        else push.get("reason", "no candidate was pushed"))
        push["uri"] = pushed_uri
    explanations = None
    explain_uri = _done_output(outputs.latest_node_run(store, config.name, pipeline_lib.EXPLAINER, run), explain_constants.EXPLANATION_KEY)
    if explain_uri:
        index = _json(Path(explain_uri, explain_constants.INDEX_FILE)) or {}
        explanations = {"html": str(Path(explain_uri, explain_constants.HTML_FILE)), "folder": explain_uri,
                        "images": len(index.get("images", [])), "candidate": index.get("settings", {}).get("candidate")}
    categorized = None
    categorized_uri = _done_output(outputs.latest_node_run(store, config.name, pipeline_lib.CATEGORIZER, run),
                                   categorizer_constants.CATEGORIZED_KEY)
    if categorized_uri:
        categorized = {**(_json(Path(categorized_uri, categorizer_constants.SUMMARY_FILE)) or {}),
                       "folder": categorized_uri}
    quarantine_uri = _done_output(outputs.latest_node_run(store, config.name, pipeline_lib.EXAMPLE_GEN, run),
                                  example_gen_constants.QUARANTINE_KEY)
    ingestion = _json(Path(quarantine_uri, example_gen_constants.SUMMARY_FILE)) if quarantine_uri else None
    return RunInfo(str(run_dir), config.name, run.name, nodes, features,
                   _model(store, config, pipeline_lib.BASELINE_TRAINER, run), candidates, push, explanations,
                   categorized, ingestion, read_drift(store, config.name, run))


def read_drift(store, pipeline_name: str, run=None) -> Optional[Dict[str, Any]]:
    """The drift gate's report of ``run`` (the latest when None) as ``review`` shows it: the batches
    compared, what moved, whether ``data.accept_drift`` let it through; None when the gate has not
    passed (a drift that stopped the run is in the run's failure message)."""
    uri = _done_output(outputs.latest_node_run(store, pipeline_name, pipeline_lib.DRIFT_GATE, run),
                       drift_constants.DRIFT_KEY)
    report = _json(Path(uri, drift_constants.REPORT_FILE)) if uri else None
    if report is None:
        return None
    return {"folder": uri, "compared": report["compared"], "drifted": report["drifted"],
            "accepted": report.get("accepted", False), "newest_batch": (report.get("newest") or {}).get("name"),
            "previous_batch": (report.get("previous") or {}).get("name"), "reason": report.get("reason"),
            "moved": [{k: m[k] for k in ("feature", "measure", "value", "threshold")} for m in report.get("moved", [])],
            "thresholds": report.get("thresholds")}
