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
from placedemarche.components.data_gate import anomalies as anomalies_lib
from placedemarche.pipeline import outputs
from placedemarche.pipeline import pipeline as pipeline_lib
from placedemarche.pipeline import run_reader
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
    return run_reader.metadata_path(run_dir)


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
    ``anomalies`` (list), ``data_validation`` (passed / failed / not run), ``notices``, ``batches``
    (examples per catalogue batch), ``drift`` (the drift gate's report, None when it stopped the run:
    then the failure says why) and the artifact folders.
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
        examples_without_text=summary.get("examples_without_text", {}),
        notices=summary["notices"],
        reviews=summary.get("reviews"),
        unlabelled=summary.get("unlabelled", 0),
        batches=summary.get("batches"),
        drift=run_reader.read_drift(store, config.name),
        artifacts={"examples": example_gen.outputs["examples"][0], "quarantine": quarantine_uri,
                   "unlabelled": (example_gen.outputs.get("unlabelled") or [None])[0]},
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
        "not run" if gate is None else "passed" if gate.state in outputs.DONE_STATES else "failed"
    )
    return report


def _completed_output(node: Optional[outputs.NodeRun], key: str) -> Optional[str]:
    if node is None or node.state not in outputs.DONE_STATES or key not in node.outputs:
        return None
    return node.outputs[key][0]


def _model_summary(model: run_reader.TrainedModel) -> Optional[Dict[str, Any]]:
    if not model.done:
        return None
    m = model.metadata
    return {"backbone": m.get("backbone"), "text_columns": m.get("text_columns") or [], "weights": m.get("weights"),
            "best_epoch": m.get("best_epoch"), "epochs_run": m.get("epochs_run"), "val_accuracy": m.get("val_accuracy"),
            "branch_val_accuracy": m.get("branch_val_accuracy"), "fusion": m.get("fusion"), "tuning": m.get("tuning"), "compute_dtype": m.get("compute_dtype"),
            "model": model.model_dir}


def _gate_summary(candidate: run_reader.CandidateRun) -> Optional[Dict[str, Any]]:
    comparison = candidate.comparison
    if comparison is None:
        return None
    return {
        "candidate": candidate.name,
        "blessed": comparison["blessed"],
        "candidate_accuracy": comparison["candidate"]["accuracy"],
        "baseline_accuracy": comparison["baseline"]["accuracy"],
        "mcnemar_p_value": comparison["mcnemar"]["p_value"],
        "test_examples": comparison["candidate"]["examples"],
        "checks": comparison["checks"],
        "comparison": candidate.comparison_uri,
    }


def run_report(config: PipelineConfig, run_dir: Path) -> Dict[str, Any]:
    """The latest run of ``run_dir``: each node's state and time, each model, each candidate's gate and
    infra validation, what was pushed and why, the explanations (``run_reader`` reads it)."""
    info = run_reader.read(config, run_dir)
    candidates = []
    for name, c in info.candidates.items():
        gate = _gate_summary(c)
        candidates.append({
            "name": name, **(_model_summary(c.model) or {"model": None}),
            "test_accuracy": gate["candidate_accuracy"] if gate else None,
            "blessed": gate["blessed"] if gate else None, "checks": gate["checks"] if gate else [],
            "comparison": gate["comparison"] if gate else None,
            "infra_validation": None if c.infra is None else (
                "skipped" if c.infra["skipped"] else "passed" if c.infra["passed"] else "failed"),
            "pushed": bool(info.push and info.push.get("pushed_candidate") == name and info.push.get("pushed")),
        })
    push = info.push or {}
    shown = push.get("pushed_candidate") or push.get("best_candidate")
    gate = _gate_summary(info.candidates[shown]) if shown in info.candidates else None
    pushed = None
    if info.push is not None:
        pushed = ({"destination": push["destination"], "version": push["version"], "candidate": push.get("pushed_candidate")}
                  if push.get("pushed") else {"reason": push.get("reason")})
        pushed["selection"] = push.get("reason")
    return {
        "run_dir": info.run_dir, "run_id": info.run_id,
        "nodes": [{"node": n.node, "state": n.state, "seconds": n.seconds} for n in info.nodes],
        "features": {node: {k: f.get(k) for k in ("backbone", "views", "weights", "rows", "timings")}
                     for node, f in info.features.items()},
        "baseline": _model_summary(info.baseline),
        "candidates": candidates,
        "gate": gate,  # the pushed candidate's (else the best one's) comparison with the baseline
        "pushed": pushed,
        "explanations": info.explanations,
        "categorized": info.categorized,
        "champion": _champion_summary(info.candidates[shown]) if shown in info.candidates else None,
        "drift": info.drift,
        "batches": (info.ingestion or {}).get("batches"),
    }


def _champion_summary(candidate: run_reader.CandidateRun) -> Optional[Dict[str, Any]]:
    """What the shown candidate's gate compared with: the served champion's version and accuracy, or why none."""
    block = (candidate.comparison or {}).get("champion")
    if block is None:
        return None
    return {k: block.get(k) for k in ("compared", "version", "accuracy", "difference", "tolerance", "reason")}


def curated_schema(config: PipelineConfig, run_dir: Path, schema_out: str):
    """Ingests the catalogue (statistics stages only), infers the curated schema from the train split's
    statistics and writes it to ``schema_out``; returns ``(schema, labels)``.

    Raises:
      PipelineFailed: ingestion failed.
    """
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from placedemarche.pipeline import schema_tools

    run(config, run_dir, stages="statistics")
    store = outputs.open_store(str(metadata_path(run_dir)))
    name = pipeline_lib.statistics_pipeline_name(config)
    stats_run = outputs.latest_node_run(store, name, pipeline_lib.STATISTICS_GEN)
    gen_run = outputs.latest_node_run(store, name, pipeline_lib.EXAMPLE_GEN)
    summary = json.loads(Path(gen_run.outputs["quarantine"][0], eg_artifacts.SUMMARY_FILE).read_text(encoding="utf-8"))
    train = statistics_pb2.DatasetFeatureStatisticsList(
        datasets=[anomalies_lib.read_statistics(stats_run.outputs["statistics"][0], "train")])
    schema = schema_tools.infer_curated_schema(train, summary["labels"])
    schema_tools.write_schema(schema, schema_out)
    return schema, sorted(summary["labels"])
