"""Runs the pipeline locally: Beam DirectRunner, SQLite metadata store, TFX caching.

This module only chooses paths, the metadata store and Beam arguments; the graph comes from
``pipeline.pipeline``. Layout of a run folder::

    RUN_DIR/metadata.sqlite     ML Metadata store (executions, artifacts, lineage)
    RUN_DIR/pipeline/           artifacts, one folder per component and execution
    RUN_DIR/sample-data/        the generated catalogue, when no --data was given
    RUN_DIR/serving/<model>/<version>/   pushed models, unless serving.serving_root says otherwise
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from tfx import v1 as tfx

from placedemarche.components.catalogue_example_gen import artifacts as eg_artifacts
from placedemarche.components.catalogue_example_gen import catalogue
from placedemarche.components.model_gate import executor as gate_executor
from placedemarche.components.model_gate import predict
from placedemarche.components.serving_pusher import executor as pusher_executor
from placedemarche.components.data_gate import anomalies as anomalies_lib
from placedemarche.pipeline import outputs
from placedemarche.pipeline import pipeline as pipeline_lib
from placedemarche.pipeline import sample_data
from placedemarche.pipeline.config import PipelineConfig

logger = logging.getLogger(__name__)

# The embedded default catalogue: large enough to train on, with every defect row (7 of 221
# quarantined, under the 5 % limit).
DEFAULT_SAMPLE_PER_CLASS = 30
DEFAULT_SAMPLE_SEED = 0


class PipelineFailed(RuntimeError):
    """A component failed; the message is the component's own error."""


def metadata_path(run_dir: Path) -> Path:
    return Path(run_dir) / "metadata.sqlite"


def with_data(config: PipelineConfig, run_dir: Path, show_progress: bool = True) -> PipelineConfig:
    """``config`` with a catalogue: the user's, or a generated sample written once into the run folder."""
    if config.data.data_dir:
        return config
    sample = Path(run_dir) / "sample-data"
    if not (sample / sample_data.CSV_NAME).exists():
        logger.info("no --data given: generating the sample catalogue in %s", sample)
        sample_data.make_sample(
            sample, per_class=DEFAULT_SAMPLE_PER_CLASS, seed=DEFAULT_SAMPLE_SEED, defects=True,
            show_progress=show_progress,
        )
    return config.replace(**{"data.data_dir": str(sample)})


def run(
    config: PipelineConfig,
    run_dir: Path,
    beam_args: Sequence[str] = (),
    stages: str = "all",
) -> None:
    """Runs the pipeline for ``config`` into ``run_dir``.

    Args:
      stages: ``"all"`` (the whole graph), ``"data"`` (ingestion and validation, for ``ingest``) or
        ``"statistics"`` (ingestion and statistics, for ``schema``).

    Raises:
      PipelineFailed: a component failed; its error message is kept.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not config.serving.serving_root:
        config = config.replace(**{"serving.serving_root": str(run_dir / "serving")})
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(str(metadata_path(run_dir)))
    build = {
        "all": pipeline_lib.create_pipeline,
        "data": pipeline_lib.create_data_pipeline,
        "statistics": pipeline_lib.create_statistics_pipeline,
    }[stages]
    pipe = build(
        config,
        pipeline_root=str(run_dir / "pipeline"),
        metadata_connection_config=connection,
        beam_pipeline_args=list(beam_args) or shlex.split(config.runner.beam_args) or ["--direct_num_workers=1"],
    )
    try:
        tfx.orchestration.LocalDagRunner().run(pipe)
    except Exception as e:  # the runner re-raises the executor's error, whatever its type
        raise PipelineFailed(str(e)) from e


def ingestion_report(config: PipelineConfig, run_dir: Path) -> Dict[str, Any]:
    """What ingestion and validation produced in ``run_dir``, read from the metadata store.

    Returns a dict with ``examples`` (per split), ``labels`` (counts), ``examples_per_split_and_label``,
    ``quarantined`` (list of row, uniq_id, image, reason, detail), ``quarantined_by_reason``,
    ``anomalies`` (list), ``data_validation`` (passed / failed / not run), ``notices`` and the
    artifact folders.
    """
    store = outputs.open_store(str(metadata_path(run_dir)))
    report: Dict[str, Any] = {"run_dir": str(run_dir)}
    example_gen = outputs.latest_node_run(store, config.name, pipeline_lib.EXAMPLE_GEN)
    if example_gen is None or "quarantine" not in example_gen.outputs:
        raise PipelineFailed(f"ingestion has not completed in {run_dir}")
    quarantine_uri = example_gen.outputs["quarantine"][0]
    summary = json.loads(Path(quarantine_uri, eg_artifacts.SUMMARY_FILE).read_text())
    quarantined = json.loads(Path(quarantine_uri, eg_artifacts.QUARANTINE_FILE).read_text())
    report.update(
        csv=summary["csv"],
        rows=summary["rows"],
        examples=summary["examples"],
        labels=summary["labels"],
        examples_per_split_and_label=summary["examples_per_split_and_label"],
        quarantined=quarantined,
        quarantined_by_reason=summary["quarantined_by_reason"],
        notices=summary["notices"],
        artifacts={"examples": example_gen.outputs["examples"][0], "quarantine": quarantine_uri},
    )
    validator = outputs.latest_node_run(store, config.name, pipeline_lib.EXAMPLE_VALIDATOR)
    anomalies_uri = _completed_output(validator, "anomalies")
    if anomalies_uri:
        report["anomalies"] = [f.to_dict() for f in anomalies_lib.read_anomalies(anomalies_uri, catalogue.SPLITS)]
        report["artifacts"]["anomalies"] = anomalies_uri
    else:
        report["anomalies"] = None
    statistics = outputs.latest_node_run(store, config.name, pipeline_lib.STATISTICS_GEN)
    statistics_uri = _completed_output(statistics, "statistics")
    if statistics_uri:
        report["artifacts"]["statistics"] = statistics_uri
    gate = outputs.latest_node_run(store, config.name, pipeline_lib.DATA_GATE)
    report["data_validation"] = (
        "not run" if gate is None else "passed" if gate.state in ("COMPLETE", "CACHED") else "failed"
    )
    return report


def _completed_output(node: Optional[outputs.NodeRun], key: str) -> Optional[str]:
    if node is None or node.state not in ("COMPLETE", "CACHED") or key not in node.outputs:
        return None
    return node.outputs[key][0]


def run_report(config: PipelineConfig, run_dir: Path) -> Dict[str, Any]:
    """Each node's latest state and time, and what each Trainer produced, from the metadata store."""
    from placedemarche.pipeline.trainer import export as export_lib

    store = outputs.open_store(str(metadata_path(run_dir)))
    nodes = []
    for node_id in pipeline_lib.ALL_NODES:
        node = outputs.latest_node_run(store, config.name, node_id)
        nodes.append({"node": node_id, "state": node.state if node else "NOT RUN",
                      "seconds": round(node.seconds, 1) if node else None})
    models = {}
    for role, node_id in zip(("candidate", "baseline"), pipeline_lib.TRAINERS):
        uri = _completed_output(outputs.latest_node_run(store, config.name, node_id), "model")
        if uri:
            serving_dir = predict.serving_dir(uri)
            metadata = export_lib.read_metadata(serving_dir)
            models[role] = {
                "backbone": metadata["backbone"], "weights": metadata["weights"],
                "best_epoch": metadata["best_epoch"], "epochs_run": metadata["epochs_run"],
                "val_accuracy": metadata["val_accuracy"], "model": serving_dir,
            }
    gate = None
    uri = _completed_output(outputs.latest_node_run(store, config.name, pipeline_lib.MODEL_GATE), "comparison")
    if uri:
        comparison = json.loads(Path(uri, gate_executor.COMPARISON_FILE).read_text())
        gate = {
            "blessed": comparison["blessed"],
            "candidate_accuracy": comparison["candidate"]["accuracy"],
            "baseline_accuracy": comparison["baseline"]["accuracy"],
            "mcnemar_p_value": comparison["mcnemar"]["p_value"],
            "test_examples": comparison["candidate"]["examples"],
            "checks": comparison["checks"],
            "comparison": uri,
        }
    pusher = outputs.latest_node_run(store, config.name, pipeline_lib.PUSHER)
    pushed_uri = _completed_output(pusher, "pushed_model")
    pushed = None
    if pushed_uri:
        marker = Path(pushed_uri, "PUSHED")  # written only when something was pushed
        not_pushed = Path(pushed_uri, pusher_executor.NOT_PUSHED_FILE)
        destination = marker.read_text().strip() if marker.exists() else ""
        pushed = {"destination": destination, "version": int(Path(destination).name)} if destination else {
            "reason": not_pushed.read_text().strip() if not_pushed.exists() else "not blessed"}
    explanations = _completed_output(outputs.latest_node_run(store, config.name, pipeline_lib.EXPLAINER), "explanation")
    if explanations:
        explanations = {"html": str(Path(explanations, "index.html")), "folder": explanations,
                        "images": len(json.loads(Path(explanations, "index.json").read_text())["images"])}
    return {"run_dir": str(run_dir), "nodes": nodes, "models": models, "gate": gate, "pushed": pushed,
            "explanations": explanations}
