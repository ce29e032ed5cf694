"""Pipeline commands: ``run`` (the whole pipeline and its summary), ``config`` (the settings), ``compile`` (Kubeflow), ``fetch-weights`` (ImageNet weights)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from placedemarche.pipeline import config as config_lib
from placedemarche.pipeline.cli import common

logger = logging.getLogger(__name__)


def _cmd_run(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import local_runner

    run_dir = os.path.abspath(args.output)
    cfg = common.config_with_data(args)
    if not cfg.data.data_dir:
        if not cfg.training.allow_random_weights:
            logger.warning(
                "no --data: running on the generated sample with RANDOM backbone weights allowed "
                "(training.allow_random_weights=true); accuracies are not those of ImageNet weights"
            )
        cfg = cfg.replace(**{"training.allow_random_weights": True})
        cfg = local_runner.with_data(cfg, run_dir, show_progress=not args.quiet)
    failure = None
    try:
        local_runner.run(cfg, run_dir)
    except local_runner.PipelineFailed as e:
        failure = str(e)
    report = local_runner.run_report(cfg, run_dir)
    report["failure"] = failure
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_run(report)
    return common.EXIT_OK if failure is None else common.EXIT_FAILED


def _print_run(report: dict) -> None:
    # Imported here: the review package imports TensorFlow, which must start after setup_logging.
    from placedemarche.pipeline.review.rendering import dtypes, tuning_lines

    print(f"run folder: {report['run_dir']}")
    for node in report["nodes"]:
        seconds = f"{node['seconds']:>7.1f} s" if node["seconds"] is not None else ""
        print(f"  {node['node']:<28} {node['state']:<10} {seconds}")
    for node, f in report["features"].items():
        rate = (f.get("timings") or {}).get("pictures_per_second")
        print(f"{node}: {f['backbone']} ({f['weights']}), {f['rows']} pictures, {f['views']} view(s), "
              f"{f.get('compute_dtype', 'float32')}, {common.fmt(rate, 2)} backbone passes/s")
    base = report["baseline"]
    if base:
        print(f"baseline: {base['backbone']} ({base['weights']}), best epoch {base['best_epoch']} of "
              f"{base['epochs_run']}, validation accuracy {common.fmt(base['val_accuracy'])}, compute "
              f"{dtypes(base)} (features / served)")
    gate = report["gate"]
    if report["candidates"]:
        where = f"test split, {gate['test_examples']} examples; baseline {gate['baseline_accuracy']:.3f}" if gate else "test split"
        print(f"candidates ({where}):")
        for c in report["candidates"]:
            reads = (c.get("backbone") or "?") + (" + " + "/".join(c["text_columns"]) if c.get("text_columns") else "")
            verdict = {True: "BLESSED", False: "not blessed", None: "not evaluated"}[c["blessed"]]
            print(f"  {c['name']:<14} {reads:<42} {dtypes(c):<11} val {common.fmt(c.get('val_accuracy'))}  test {common.fmt(c['test_accuracy'])}  "
                  f"{verdict:<13} infra {c['infra_validation'] or 'not run'}{'  PUSHED' if c['pushed'] else ''}")
            for line in tuning_lines(c.get("tuning"), "      "):
                print(line)
            for check in c["checks"]:
                if not check["passed"]:
                    print(f"      [FAIL] {check['explanation']}")
    if gate:
        print(f"{gate['candidate']} vs baseline: McNemar p = {gate['mcnemar_p_value']:.3g} ({gate['comparison']})")
    champion = report.get("champion")
    if champion:
        print(f"champion: served version {champion['version']}, accuracy {common.fmt(champion['accuracy'])}; "
              f"{gate['candidate'] if gate else 'candidate'} {common.fmt(champion['difference'], 4)} vs it (tolerance "
              f"{champion['tolerance']})" if champion["compared"] else f"champion: none compared ({champion['reason']})")
    drift = report.get("drift")
    if drift and drift["compared"]:
        print(f"drift gate: batch {drift['newest_batch']} vs {drift['previous_batch']}: "
              + ("DRIFTED, accepted (data.accept_drift=true): " + ", ".join(m["feature"] for m in drift["moved"])
                 if drift["accepted"] else "nothing moved past its threshold"))
    pushed = report["pushed"]
    if pushed and "version" in pushed:
        print(f"pushed: {pushed['candidate']} as version {pushed['version']} -> {pushed['destination']}")
        print(f"  why: {pushed['selection']}")
    elif pushed is not None:
        print(f"pushed: nothing ({pushed['reason']})")
    categorized = report.get("categorized")
    if categorized:
        if categorized.get("skipped"):
            print(f"listings without a category: not categorised: {categorized['skipped']}")
        else:
            print(f"listings without a category: {categorized['predicted']} categorised by version "
                  f"{categorized['model']['version']}, {categorized['rejected']} rejected, "
                  f"{categorized['review_queue']} to review: {categorized['folder']}")
    if report.get("explanations"):
        e = report["explanations"]
        print(f"explanations: {e['images']} pictures of {e.get('candidate') or 'the candidate'}, {e['html']}")
    if report["candidates"] and any(c["blessed"] is not None for c in report["candidates"]):
        print(f"review: placedemarche review --output {report['run_dir']}")
    if report.get("failure"):
        print(f"\nFAILED: {report['failure']}", file=sys.stderr)


def _cmd_config(args: argparse.Namespace) -> int:
    if args.keys:
        for key, (default, help_) in config_lib.describe_keys().items():
            print(f"{key} = {default!r}\n    {help_}")
        return common.EXIT_OK
    cfg = config_lib.load_config(args.config, args.overrides)
    sys.stdout.write(config_lib.dump_yaml(cfg))
    return common.EXIT_OK


def _cmd_compile(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import kubeflow

    cfg = config_lib.load_config(args.config, args.overrides)
    result = kubeflow.compile_pipeline(cfg, args.output)
    tasks = result["pipeline_spec"]["root"]["dag"]["tasks"]
    print(f"wrote {args.output}: Kubeflow Pipelines v2 spec, {len(tasks)} tasks, image {cfg.runner.image}, "
          f"Trainers on {cfg.runner.trainer_gpus} x {cfg.runner.gpu_resource}")
    print("runtime parameters: data_dir, serving_root; submit it as kubernetes/README.md describes")
    return common.EXIT_OK


def _cmd_fetch_weights(args: argparse.Namespace) -> int:
    import keras

    from placedemarche.components.trainer import backbones

    for name in args.backbones:
        try:
            backbone = backbones.get(name)
        except ValueError as e:
            raise common.UserError(str(e)) from e
        target = backbones.keras_cache_file(backbone)
        if os.path.exists(target):
            print(f"{name}: already in the Keras cache: {target}")
            continue
        try:
            path = keras.utils.get_file(backbone.weights_file, backbone.weights_url, cache_subdir="models",
                                        cache_dir=os.path.dirname(os.path.dirname(target)))
        except Exception as e:  # no network: say where to put the file instead
            print(f"placedemarche fetch-weights: error: {name}: downloading {backbone.weights_url} failed "
                  f"({e}); copy the file to {target} instead", file=sys.stderr)
            return common.EXIT_FAILED
        print(f"{name}: {path}")
    return common.EXIT_OK



def register(sub) -> None:
    """Adds this group's subcommands to ``sub`` (the top-level parser's subparsers)."""
    p = sub.add_parser(
        "run",
        help="run the whole pipeline locally (data, both Trainers, gate, infra validation, push, SHAP)",
        description=(
            "Runs the pipeline on the Beam DirectRunner with a SQLite metadata store and TFX caching in "
            "RUN_DIR: ingestion and validation, the EfficientNet-B7 candidate and VGG19 baseline "
            "Trainers, TFMA's Evaluator and the model gate on the test split, infra validation, the "
            "push of a blessed and infra-validated model into RUN_DIR/serving/<model_name>/<version>/ "
            "(serving.serving_root), and SHAP explanations of the candidate. Prints each component's "
            "state and time, the accuracies, every threshold, the decision, the pushed version and "
            "where the explanations are. Without --data it runs on the generated sample with random "
            "backbone weights allowed (ImageNet weights cannot be downloaded offline). Exit status 1 "
            "when a component failed; a candidate that is not blessed is not a failure."
        ),
    )
    common.add_run_arguments(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "config",
        help="print the effective configuration, or every key with its default (--keys)",
        description=(
            "Builds the configuration from the defaults, --config FILE and --set overrides, validates "
            "it and prints it as YAML (a file 'placedemarche --config' accepts). Unknown keys and bad "
            "values are refused with a message naming the key and what is allowed."
        ),
    )
    common.add_config_arguments(p)
    p.add_argument("--keys", action="store_true", help="list every key with its default and meaning")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser(
        "compile",
        help="compile the pipeline for Kubeflow Pipelines (KFP v2 spec), offline",
        description=(
            "Writes the KFP v2 pipeline spec (YAML) of the whole pipeline with TFX's Kubeflow V2 "
            "runner: every step runs in runner.image, the Trainers request runner.trainer_gpus GPUs "
            "with runner.node_selector / runner.tolerations, Beam steps get runner.beam_args. "
            "runner.pipeline_root must be set. data_dir and serving_root are runtime parameters."
        ),
    )
    p.add_argument("--target", choices=["kubeflow"], default="kubeflow", help="orchestrator (kubeflow)")
    p.add_argument("--output", required=True, metavar="FILE", help="spec file to write (.yaml)")
    common.add_config_arguments(p)
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser(
        "fetch-weights",
        help="download backbones' ImageNet weights into the Keras cache (needs internet)",
        description=(
            "Downloads the no-top ImageNet weights of each BACKBONE into the Keras cache "
            "($KERAS_HOME/models, default ~/.keras/models), where training finds them offline. Used by "
            "the Dockerfile's BAKE_WEIGHTS option."
        ),
    )
    p.add_argument("backbones", nargs="+", metavar="BACKBONE", help="e.g. efficientnet_b7 vgg19")
    p.set_defaults(func=_cmd_fetch_weights)

