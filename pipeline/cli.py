"""The ``placedemarche`` command line.

Each subcommand is a thin layer over a library function; errors a user can fix (bad config, bad
paths) are printed as one ``error:`` line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional, Sequence

from placedemarche.pipeline import config as config_lib

logger = logging.getLogger("placedemarche")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UserError(Exception):
    """A problem the user can fix from the message alone (no traceback is shown)."""


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file with any subset of the configuration keys (see 'placedemarche config --keys')",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one key, e.g. --set training.epochs=3 (repeatable; applied after --config)",
    )


_DATA_HELP = "catalogue folder: one CSV and its images folder (default: the generated sample)"


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --output RUN_DIR, --json and the config arguments of the pipeline-running commands."""
    parser.add_argument("--data", metavar="DIR", help=_DATA_HELP)
    parser.add_argument(
        "--output", required=True, metavar="RUN_DIR", help="run folder (created; reused for caching)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_config_arguments(parser)


def _cmd_make_sample(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import sample_data  # heavy imports (pandas, PIL) only when needed

    try:
        csv_path = sample_data.make_sample(
            args.out, per_class=args.per_class, seed=args.seed, defects=args.defects,
            show_progress=not args.quiet,
        )
    except (ValueError, FileExistsError) as e:
        raise UserError(str(e)) from e
    print(f"catalogue written: {csv_path}")
    print(f"images folder:     {csv_path.parent / sample_data.IMAGES_DIR}")
    print(f"defect manifest:   {csv_path.parent / sample_data.MANIFEST_NAME}")
    return EXIT_OK


def _cmd_config(args: argparse.Namespace) -> int:
    if args.keys:
        for key, (default, help_) in config_lib.describe_keys().items():
            print(f"{key} = {default!r}\n    {help_}")
        return EXIT_OK
    cfg = config_lib.load_config(args.config, args.overrides)
    sys.stdout.write(config_lib.dump_yaml(cfg))
    return EXIT_OK


def _config_with_data(args: argparse.Namespace) -> config_lib.PipelineConfig:
    cfg = config_lib.load_config(args.config, args.overrides)
    if getattr(args, "data", None):
        data_dir = os.path.abspath(args.data) if "://" not in args.data else args.data
        if "://" not in data_dir and not os.path.isdir(data_dir):
            raise UserError(f"--data '{args.data}' is not a folder (it must hold the CSV and Images/)")
        cfg = cfg.replace(**{"data.data_dir": data_dir})
    return cfg


def _cmd_ingest(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import local_runner

    run_dir = os.path.abspath(args.output)
    cfg = local_runner.with_data(_config_with_data(args), run_dir, show_progress=not args.quiet)
    failure = None
    try:
        local_runner.run(cfg, run_dir, stages="data")
    except local_runner.PipelineFailed as e:
        failure = str(e)
    try:
        report = local_runner.ingestion_report(cfg, run_dir)
    except local_runner.PipelineFailed:
        report = {"run_dir": run_dir, "examples": None, "labels": None, "quarantined": None, "anomalies": None}
    report["failure"] = failure
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_ingestion(report)
    return EXIT_OK if failure is None else EXIT_FAILED


def _print_ingestion(report: dict) -> None:
    if report.get("examples") is not None:
        print(f"catalogue: {report['csv']} ({report['rows']} rows)")
        splits = list(report["examples"])
        labels = sorted(report["labels"])
        width = max([len(x) for x in labels] + [8])
        print("\nexamples per split and label:")
        print(f"  {'label':<{width}}  " + "  ".join(f"{s:>6}" for s in splits) + "   total")
        per = report["examples_per_split_and_label"]
        for label in labels:
            cells = "  ".join(f"{per[s].get(label, 0):>6}" for s in splits)
            print(f"  {label:<{width}}  {cells}  {report['labels'][label]:>6}")
        cells = "  ".join(f"{report['examples'][s]:>6}" for s in splits)
        print(f"  {'total':<{width}}  {cells}  {sum(report['examples'].values()):>6}")
        quarantined = report["quarantined"]
        print(f"\nquarantined: {len(quarantined)} of {report['rows']} rows")
        for reason, n in report["quarantined_by_reason"].items():
            print(f"  {reason}: {n}")
        for q in quarantined:
            print(f"  row {q['row']}: {q['reason']} - id {q['uniq_id']}, file {q['image'] or '-'}: {q['detail']}")
        for note in report["notices"]:
            print(f"notice: {note}")
        anomalies = report["anomalies"]
        if anomalies is None:
            print("\nanomalies: not checked (validation did not run)")
        else:
            print(f"\nanomalies: {len(anomalies) or 'none'}")
            for a in anomalies:
                print(f"  split '{a['split']}', feature '{a['feature']}': {a['short']} ({a['description']})")
        print(f"data validation: {report['data_validation']}")
        print(f"artifacts: {report['artifacts']}")
    if report.get("failure"):
        print(f"\nFAILED: {report['failure']}", file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import local_runner

    run_dir = os.path.abspath(args.output)
    cfg = _config_with_data(args)
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
    return EXIT_OK if failure is None else EXIT_FAILED


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _print_run(report: dict) -> None:
    print(f"run folder: {report['run_dir']}")
    for node in report["nodes"]:
        seconds = f"{node['seconds']:>7.1f} s" if node["seconds"] is not None else ""
        print(f"  {node['node']:<28} {node['state']:<10} {seconds}")
    for node, f in report["features"].items():
        rate = (f.get("timings") or {}).get("pictures_per_second")
        print(f"{node}: {f['backbone']} ({f['weights']}), {f['rows']} pictures, {f['views']} view(s), "
              f"{_fmt(rate, 2)} backbone passes/s")
    base = report["baseline"]
    if base:
        print(f"baseline: {base['backbone']} ({base['weights']}), best epoch {base['best_epoch']} of "
              f"{base['epochs_run']}, validation accuracy {_fmt(base['val_accuracy'])}")
    gate = report["gate"]
    if report["candidates"]:
        where = f"test split, {gate['test_examples']} examples; baseline {gate['baseline_accuracy']:.3f}" if gate else "test split"
        print(f"candidates ({where}):")
        for c in report["candidates"]:
            reads = (c.get("backbone") or "?") + (" + " + "/".join(c["text_columns"]) if c.get("text_columns") else "")
            verdict = {True: "BLESSED", False: "not blessed", None: "not evaluated"}[c["blessed"]]
            print(f"  {c['name']:<14} {reads:<42} val {_fmt(c.get('val_accuracy'))}  test {_fmt(c['test_accuracy'])}  "
                  f"{verdict:<13} infra {c['infra_validation'] or 'not run'}{'  PUSHED' if c['pushed'] else ''}")
            for check in c["checks"]:
                if not check["passed"]:
                    print(f"      [FAIL] {check['explanation']}")
    if gate:
        print(f"{gate['candidate']} vs baseline: McNemar p = {gate['mcnemar_p_value']:.3g} ({gate['comparison']})")
    pushed = report["pushed"]
    if pushed and "version" in pushed:
        print(f"pushed: {pushed['candidate']} as version {pushed['version']} -> {pushed['destination']}")
        print(f"  why: {pushed['selection']}")
    elif pushed is not None:
        print(f"pushed: nothing ({pushed['reason']})")
    if report.get("explanations"):
        e = report["explanations"]
        print(f"explanations: {e['images']} pictures of {e.get('candidate') or 'the candidate'}, {e['html']}")
    if report["candidates"] and any(c["blessed"] is not None for c in report["candidates"]):
        print(f"review: placedemarche review --output {report['run_dir']}")
    if report.get("failure"):
        print(f"\nFAILED: {report['failure']}", file=sys.stderr)


def _cmd_review(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import review as review_lib

    cfg = config_lib.load_config(args.config, args.overrides)
    run_dir = os.path.abspath(args.output)
    try:
        review = review_lib.gather(cfg, run_dir)
    except review_lib.ReviewError as e:
        raise UserError(str(e)) from e
    review["html"] = review_lib.write_html(review, args.html)
    print(review_lib.to_json(review) if args.json else review_lib.render_text(review))
    return EXIT_OK


def _cmd_override(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import review as review_lib

    cfg = config_lib.load_config(args.config, args.overrides)
    action = review_lib.PUSH if args.push else review_lib.ROLLBACK
    try:
        record = review_lib.record_override(cfg, os.path.abspath(args.output), action, args.reason,
                                            user=args.user, rollback_to=args.rollback_to, candidate=args.candidate)
    except review_lib.ReviewError as e:
        raise UserError(str(e)) from e
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        what = f" of candidate {record['candidate']}" if record.get("candidate") else ""
        print(f"{record['action']}{what} by {record['user']}: {record['source']} is now version "
              f"{record['served_version']} ({record['destination']}); recorded in the metadata store")
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    from placedemarche.components.shap_explainer import executor as explain_executor
    from placedemarche.components.shap_explainer import report

    cfg = config_lib.load_config(args.config, args.overrides)
    settings = {"masker": args.masker or cfg.explain.masker, "max_evals": args.max_evals or cfg.explain.max_evals,
                "batch_size": cfg.explain.batch_size, "top_k": args.top_k or cfg.explain.top_k}
    if not os.path.exists(os.path.join(args.model, "saved_model.pb")):
        raise UserError(f"--model '{args.model}' holds no saved_model.pb: give a pushed version folder "
                        "(e.g. RUN_DIR/serving/product_category/1) or a Trainer's Format-Serving folder")
    pictures = []
    for path in args.images:
        if not os.path.isfile(path):
            raise UserError(f"image '{path}' does not exist")
        with open(path, "rb") as f:
            pictures.append((os.path.basename(path), None, f.read(), os.path.abspath(path)))
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(pictures), unit="image", desc="SHAP", file=sys.stderr)

        def progress(n, total, uid, result):
            bar.set_postfix_str(f"{uid}: {result.seconds:.1f} s")
            bar.update(1)
    try:
        items, labels, _ = explain_executor.explain_items(args.model, pictures, settings, progress)
    except ValueError as e:  # an undecodable picture, a model without the pixels signature
        raise UserError(str(e)) from e
    index = report.write(args.out, items, labels, {**settings, "model": os.path.abspath(args.model)})
    for entry in index:
        top = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in entry["top_k"])
        print(f"{entry['id']}: {top} -> {os.path.join(args.out, entry['overlay'])}")
    print(f"explanations: {os.path.join(args.out, report.HTML_FILE)}")
    return EXIT_OK


def _cmd_compile(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import kubeflow

    cfg = config_lib.load_config(args.config, args.overrides)
    result = kubeflow.compile_pipeline(cfg, args.output)
    tasks = result["pipeline_spec"]["root"]["dag"]["tasks"]
    print(f"wrote {args.output}: Kubeflow Pipelines v2 spec, {len(tasks)} tasks, image {cfg.runner.image}, "
          f"Trainers on {cfg.runner.trainer_gpus} x {cfg.runner.gpu_resource}")
    print("runtime parameters: data_dir, serving_root; submit it as kubernetes/README.md describes")
    return EXIT_OK


def _cmd_fetch_weights(args: argparse.Namespace) -> int:
    import keras

    from placedemarche.components.trainer import backbones

    for name in args.backbones:
        try:
            backbone = backbones.get(name)
        except ValueError as e:
            raise UserError(str(e)) from e
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
            return EXIT_FAILED
        print(f"{name}: {path}")
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    import shutil
    import signal
    import threading

    cfg = config_lib.load_config(args.config, args.overrides)
    name = args.model_name or cfg.serving.model_name
    base = os.path.abspath(args.model_base_path)
    if not os.path.isdir(base):
        raise UserError(f"--model-base-path '{args.model_base_path}' is not a folder: give <serving_root>/<model_name>, "
                        "e.g. runs/demo/serving/product_category")
    rest_port = cfg.serving.rest_port if args.rest_port is None else args.rest_port
    grpc_port = cfg.serving.grpc_port if args.grpc_port is None else args.grpc_port
    labels = {}
    for item in args.label:
        label, _, version = item.partition("=")
        if not version.isdigit():
            raise UserError(f"--label '{item}' must look like stable=3")
        labels[label] = int(version)
    binary = shutil.which("tensorflow_model_server")
    if binary and not args.local:
        command = [binary, f"--model_name={name}", f"--model_base_path={base}", f"--port={grpc_port}",
                   f"--rest_api_port={rest_port}", "--enable_batching=true"]
        print("running TensorFlow Serving: " + " ".join(command), flush=True)
        os.execv(binary, command)
    from placedemarche.serving.server import LocalServer

    print("tensorflow_model_server is not on PATH: starting the LOCAL STAND-IN server (Python; TF Serving's "
          "REST and gRPC APIs for this model, not TF Serving itself)", file=sys.stderr, flush=True)
    server = LocalServer(name, base, rest_port=rest_port, grpc_port=grpc_port, labels=labels,
                         max_batch_size=cfg.serving.max_batch_size, batch_timeout_ms=cfg.serving.batch_timeout_ms,
                         max_request_bytes=cfg.serving.max_request_mb * 1024 * 1024).start()
    versions = server.store.loaded_versions()
    print(f"serving {name} versions {versions or 'none yet (waiting for one)'} from {base}: "
          f"REST http://localhost:{server.rest_port}/v1/models/{name}, gRPC localhost:{server.grpc_port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return EXIT_OK


def _cmd_predict(args: argparse.Namespace) -> int:
    from placedemarche.serving import client as client_lib

    host, _, port = args.server.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--server '{args.server}' must look like HOST:PORT, e.g. localhost:8500")
    images = []
    for path in args.images:
        if not os.path.isfile(path):
            raise UserError(f"image '{path}' does not exist")
        with open(path, "rb") as f:
            images.append(f.read())
    config = client_lib.ClientConfig(host=host, port=int(port), model_name=args.model, version=args.version,
                                     label=args.label, timeout_s=args.timeout)
    client = client_lib.make_client(args.protocol, config)
    try:
        result = client.predict(images)
    except client_lib.ServingClientError as e:
        print(f"placedemarche predict: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    ranked = result.top_k(args.top_k)
    if args.json:
        print(json.dumps([{"image": p, "top_k": [{"label": l, "probability": round(q, 6)} for l, q in r]}
                          for p, r in zip(args.images, ranked)], indent=2))
    else:
        for path, row in zip(args.images, ranked):
            print(f"{path}: " + ", ".join(f"{label} {p:.3f}" for label, p in row))
    return EXIT_OK


def _cmd_serving_config(args: argparse.Namespace) -> int:
    from placedemarche.serving import tfs_config

    cfg = config_lib.load_config(args.config, args.overrides)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for name, text in tfs_config.files(cfg).items():
            with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {os.path.join(args.out, name)}")
        print("run: tensorflow_model_server " + " ".join(
            a.replace(tfs_config.CONFIG_DIR, os.path.abspath(args.out)) for a in tfs_config.tfserving_args(cfg)))
    if args.configmap:
        with open(args.configmap, "w", encoding="utf-8") as f:
            f.write(tfs_config.configmap_yaml(cfg))
        print(f"wrote {args.configmap}")
    if not args.out and not args.configmap:
        raise UserError("give --out DIR and / or --configmap FILE")
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    from placedemarche.components.catalogue_example_gen import artifacts as eg_artifacts
    from placedemarche.components.data_gate import anomalies as anomalies_lib
    from placedemarche.pipeline import local_runner, outputs, pipeline as pipeline_lib, schema_tools
    from tensorflow_metadata.proto.v0 import statistics_pb2

    run_dir = os.path.abspath(args.work_dir)
    cfg = local_runner.with_data(_config_with_data(args), run_dir, show_progress=not args.quiet)
    try:
        local_runner.run(cfg, run_dir, stages="statistics")
    except local_runner.PipelineFailed as e:
        raise UserError(f"ingestion failed, no schema written: {e}") from e
    store = outputs.open_store(str(local_runner.metadata_path(run_dir)))
    name = pipeline_lib.statistics_pipeline_name(cfg)
    stats_run = outputs.latest_node_run(store, name, pipeline_lib.STATISTICS_GEN)
    gen_run = outputs.latest_node_run(store, name, pipeline_lib.EXAMPLE_GEN)
    with open(os.path.join(gen_run.outputs["quarantine"][0], eg_artifacts.SUMMARY_FILE), encoding="utf-8") as f:
        summary = json.load(f)
    train = statistics_pb2.DatasetFeatureStatisticsList(
        datasets=[anomalies_lib.read_statistics(stats_run.outputs["statistics"][0], "train")]
    )
    schema = schema_tools.infer_curated_schema(train, summary["labels"])
    schema_tools.write_schema(schema, args.schema_out)
    print(f"schema written: {args.schema_out} ({len(schema.feature)} features, labels: "
          f"{', '.join(sorted(summary['labels']))})")
    print(f"use it with --set data.schema_file={args.schema_out}, or copy it over "
          "pipeline/schema/schema.pbtxt to make it the default")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="placedemarche",
        description=(
            "Product-photo categorisation for the Place de Marche marketplace: a TFX pipeline that "
            "ingests a catalogue (CSV + images), trains an EfficientNet-B7 transfer model against a "
            "VGG19 baseline, blesses the candidate only if it beats the baseline on held-out test "
            "pictures, pushes it to TensorFlow Serving, and explains its predictions with SHAP. It runs "
            "locally on Beam and compiles for Kubeflow Pipelines."
        ),
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "make-sample",
        help="write a generated catalogue in the Flipkart sample's format (the default demo data)",
        description=(
            "Writes OUT/<csv> with the real catalogue's 15 columns and OUT/Images/ with generated "
            "product pictures (7 categories, each learnable from its shapes and colours; JPEG and PNG). "
            "--defects adds one row per fault real catalogues have (missing file, truncated JPEG, "
            "not an image, tiny image, duplicate id, one picture under two categories, empty category) "
            "and valid rows in unusual forms (grayscale, PNG with alpha, CMYK JPEG, a variant reusing "
            "a product's picture); "
            "OUT/sample_manifest.json lists them. The same --seed gives the same files."
        ),
    )
    p.add_argument("out", metavar="OUT", help="folder to write (created; must not hold a catalogue)")
    p.add_argument("--per-class", type=int, default=20, metavar="N", help="products per category (default 20)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--defects", action="store_true", help="add the defect rows described above")
    p.set_defaults(func=_cmd_make_sample)

    p = sub.add_parser(
        "config",
        help="print the effective configuration, or every key with its default (--keys)",
        description=(
            "Builds the configuration from the defaults, --config FILE and --set overrides, validates "
            "it and prints it as YAML (a file 'placedemarche --config' accepts). Unknown keys and bad "
            "values are refused with a message naming the key and what is allowed."
        ),
    )
    _add_config_arguments(p)
    p.add_argument("--keys", action="store_true", help="list every key with its default and meaning")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser(
        "ingest",
        help="check a catalogue: ingestion, statistics and schema validation only (no training)",
        description=(
            "Runs the pipeline's first stages locally (CatalogueExampleGen -> StatisticsGen -> "
            "ImportSchemaGen -> ExampleValidator -> DataValidationGate) on the Beam DirectRunner with "
            "a SQLite metadata store in RUN_DIR, then prints examples per split and label, the "
            "quarantined rows by reason and the schema anomalies. Exit status 1 when too many rows "
            "were quarantined (data.max_quarantine_fraction) or the data has anomalies. Without "
            "--data it ingests the generated sample catalogue."
        ),
    )
    _add_run_arguments(p)
    p.set_defaults(func=_cmd_ingest)

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
    _add_run_arguments(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "review",
        help="why the candidate was or was not blessed: metrics, thresholds, push, overrides",
        description=(
            "Shows the latest evaluation of RUN_DIR: candidate and baseline side by side on the test "
            "split (overall and per category, from the TFX Evaluator), both confusion matrices, every "
            "threshold with its value and pass/fail, McNemar's p-value, infra validation, the "
            "decision, the pushed version and reviewer overrides. Also writes a self-contained HTML "
            "report with the plots (default RUN_DIR/review/index.html)."
        ),
    )
    p.add_argument("--output", required=True, metavar="RUN_DIR", help="the run folder to review")
    p.add_argument("--json", action="store_true", help="print the review as JSON")
    p.add_argument("--html", metavar="FILE", help="where to write the HTML report")
    _add_config_arguments(p)
    p.set_defaults(func=_cmd_review)

    p = sub.add_parser(
        "override",
        help="a reviewer's decision: push a model that was not blessed, or roll the served version back",
        description=(
            "Publishes a candidate of the run (--candidate NAME, default the best one by test accuracy) as "
            "the next served version although it was not blessed (--push), or publishes an earlier version's content again as the next version "
            "(--rollback-to N; TF Serving serves the highest version, nothing is deleted). The "
            "decision, who took it and why are stored in RUN_DIR's metadata store and shown by "
            "'placedemarche review'."
        ),
    )
    p.add_argument("--output", required=True, metavar="RUN_DIR", help="the run folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--push", action="store_true", help="push a candidate of the run")
    p.add_argument("--candidate", metavar="NAME", help="with --push: which candidate (default: the best one)")
    what.add_argument("--rollback-to", type=int, metavar="VERSION", help="serve this earlier version again")
    p.add_argument("--reason", required=True, help="why (stored with the decision)")
    p.add_argument("--user", help="who decides (default: $USER)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    _add_config_arguments(p)
    p.set_defaults(func=_cmd_override)

    p = sub.add_parser(
        "explain",
        help="SHAP explanations of any pictures with an exported model",
        description=(
            "Explains each IMAGE with SHAP's Partition explainer over the model's own decoding and "
            "preprocessing (the served model), for its top-k categories. Writes OUT/overlays/*.png, "
            "OUT/shap_values.npz, OUT/index.json and OUT/index.html, and prints each picture's top "
            "categories. About max_evals forward passes per picture."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="picture files (JPEG, PNG, GIF, BMP)")
    p.add_argument("--model", required=True, metavar="DIR", help="exported SavedModel folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--masker", choices=config_lib.MASKERS, help="SHAP masker (default: explain.masker)")
    p.add_argument("--max-evals", type=int, metavar="N", help="model evaluations per picture (default: explain.max_evals)")
    p.add_argument("--top-k", type=int, metavar="K", help="categories explained per picture (default: explain.top_k)")
    _add_config_arguments(p)
    p.set_defaults(func=_cmd_explain)

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
    _add_config_arguments(p)
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

    p = sub.add_parser(
        "serve",
        help="serve pushed models: TF Serving when installed, else a local stand-in with its APIs",
        description=(
            "Runs tensorflow_model_server on the Pusher's folder when the binary is on PATH. Otherwise "
            "starts the LOCAL STAND-IN (serving/server.py): Python, not TF Serving, but with TF "
            "Serving's REST and gRPC APIs for this model; it loads new versions as they are pushed, "
            "batches concurrent requests and refuses malformed ones. Stop with Ctrl-C."
        ),
    )
    p.add_argument("--model-base-path", required=True, metavar="DIR", help="<serving_root>/<model_name>")
    p.add_argument("--model-name", help="default: serving.model_name")
    p.add_argument("--rest-port", type=int, help="default: serving.rest_port (8501)")
    p.add_argument("--grpc-port", type=int, help="default: serving.grpc_port (8500)")
    p.add_argument("--label", action="append", default=[], metavar="NAME=VERSION", help="version label (repeatable)")
    p.add_argument("--local", action="store_true", help="use the local stand-in even if TF Serving is installed")
    _add_config_arguments(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "predict",
        help="ask a running TF Serving (or the local stand-in) for pictures' categories",
        description="Sends each IMAGE to the served model and prints its top-k categories with probabilities.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--server", required=True, metavar="HOST:PORT", help="gRPC port (8500) or REST port (8501)")
    p.add_argument("--protocol", choices=["grpc", "rest"], default="grpc")
    p.add_argument("--model", default="product_category", help="model name (default: product_category)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="a version (default: the latest)")
    which.add_argument("--label", help="a version label, e.g. stable")
    p.add_argument("--top-k", type=int, default=3, metavar="K")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "serving-config",
        help="TF Serving's models.config, batching and monitoring files from the pipeline config",
        description=(
            "Writes models.config (model name, serving.base_path, version policy, stable / canary "
            "labels), batching.config and monitoring.config (Prometheus) into --out, and / or the "
            "Kubernetes ConfigMap holding them (--configmap; kubernetes/serving/base/configmap.yaml)."
        ),
    )
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--configmap", metavar="FILE")
    _add_config_arguments(p)
    p.set_defaults(func=_cmd_serving_config)

    p = sub.add_parser(
        "schema",
        help="infer and curate a TFDV schema from a catalogue",
        description=(
            "Ingests the catalogue, computes statistics, infers a schema from the train split and "
            "curates it (required features, the label's domain = the categories found, no other "
            "string domains), then writes it as pbtxt. Use it when the catalogue changes on purpose "
            "(new categories, another label depth)."
        ),
    )
    p.add_argument("--data", metavar="DIR", help=_DATA_HELP)
    p.add_argument("--output", dest="schema_out", required=True, metavar="FILE", help="schema file to write")
    p.add_argument("--work-dir", required=True, metavar="DIR", help="run folder for the ingestion it needs")
    _add_config_arguments(p)
    p.set_defaults(func=_cmd_schema)
    return parser


class _UnsavedGradientsFilter(logging.Filter):
    """Drops TensorFlow's "Importing a function ... with ops with unsaved custom gradients" warning.

    Models are exported without custom gradients on purpose (``components/trainer/export.py``:
    nothing differentiates a served model), so every load of one would otherwise warn that taking a
    gradient "will likely fail". Shown with --verbose.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "unsaved custom gradients" not in record.getMessage()


_UNSAVED_GRADIENTS_FILTER = _UnsavedGradientsFilter()
_NO_PROGRESS_ENV = "PLACEDEMARCHE_NO_PROGRESS"  # components.trainer.train.NO_PROGRESS_ENV (not imported: TF)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    # TFX, Beam and TensorFlow log a great deal at INFO: keep theirs for --verbose, ours always.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # One root package: every module of ours (pipeline, components, serving) logs under it.
    logging.getLogger("placedemarche").setLevel(level)
    absl_logger = logging.getLogger("absl")
    if verbose:
        absl_logger.removeFilter(_UNSAVED_GRADIENTS_FILTER)
    else:
        absl_logger.addFilter(_UNSAVED_GRADIENTS_FILTER)  # no-op when already there
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if verbose else "2")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs one subcommand; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    # The Trainers' progress bars are drawn in this process (local runner); -q turns them off.
    previous = os.environ.get(_NO_PROGRESS_ENV)
    if args.quiet:
        os.environ[_NO_PROGRESS_ENV] = "1"
    try:
        return args.func(args)
    except (UserError, config_lib.ConfigError) as e:
        print(f"placedemarche {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if previous is None:
            os.environ.pop(_NO_PROGRESS_ENV, None)
        else:
            os.environ[_NO_PROGRESS_ENV] = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
