"""Serving commands: ``serve`` (TF Serving or the local stand-in), ``predict`` (ask a served model), ``serving-config`` (TF Serving's files)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from typing import List

from placedemarche.pipeline import config as config_lib
from placedemarche.pipeline.cli import common

logger = logging.getLogger(__name__)


def _cmd_serve(args: argparse.Namespace) -> int:
    from placedemarche.serving import launch

    cfg = config_lib.load_config(args.config, args.overrides)
    name = args.model_name or cfg.serving.model_name
    base = os.path.abspath(args.model_base_path)
    if not os.path.isdir(base):
        raise common.UserError(f"--model-base-path '{args.model_base_path}' is not a folder: give "
                               "<serving_root>/<model_name>, e.g. runs/demo/serving/product_category")
    rest_port = cfg.serving.rest_port if args.rest_port is None else args.rest_port
    grpc_port = cfg.serving.grpc_port if args.grpc_port is None else args.grpc_port
    try:
        labels = launch.parse_labels(args.label)
    except ValueError as e:
        raise common.UserError(str(e)) from e
    binary = launch.find_tf_serving()
    if binary and not args.local:
        command = launch.tf_serving_command(binary, name, base, grpc_port, rest_port)
        print("running TensorFlow Serving: " + " ".join(command), flush=True)
        launch.exec_tf_serving(command)
    from placedemarche.serving.server import LocalServer

    print("tensorflow_model_server is not on PATH: starting the LOCAL STAND-IN server (Python; TF Serving's "
          "REST and gRPC APIs for this model, not TF Serving itself)", file=sys.stderr, flush=True)
    request_log = None
    if cfg.serving.request_log_dir:
        from placedemarche.serving.request_log import RequestLog

        request_log = RequestLog(cfg.serving.request_log_dir, cfg.serving.request_log_rate,
                                 cfg.serving.request_log_max_mb * 1024 * 1024)
        print(f"logging {cfg.serving.request_log_rate:.0%} of the requests to {request_log.path} "
              f"(up to {cfg.serving.request_log_max_mb} MB)", flush=True)
    server = LocalServer(name, base, rest_port=rest_port, grpc_port=grpc_port, host=args.host, labels=labels,
                         max_batch_size=cfg.serving.max_batch_size, batch_timeout_ms=cfg.serving.batch_timeout_ms,
                         max_request_bytes=cfg.serving.max_request_mb * 1024 * 1024, request_log=request_log).start()
    versions = server.store.loaded_versions()
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    print(f"serving {name} versions {versions or 'none yet (waiting for one)'} from {base} on {args.host}: "
          f"REST http://{shown}:{server.rest_port}/v1/models/{name}, gRPC {shown}:{server.grpc_port}", flush=True)
    launch.run_until_stopped(server)
    return common.EXIT_OK


def _catalogue_requests(args: argparse.Namespace) -> List[dict]:
    """The rows of ``--catalogue CSV`` as requests: id, picture bytes (or why not), text."""
    import csv

    from placedemarche.components.trainer import text as text_lib

    cfg = config_lib.load_config(args.config, args.overrides)
    path = args.catalogue
    if not os.path.isfile(path):
        raise common.UserError(f"--catalogue '{path}' does not exist")
    images_dir = os.path.join(os.path.dirname(os.path.abspath(path)), cfg.data.images_dir)
    columns = [c.strip() for c in args.text_columns.split(",") if c.strip()]
    rows = []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        wanted = {cfg.data.id_column, cfg.data.image_column}
        missing = sorted(wanted - set(reader.fieldnames or []))
        if missing:
            raise common.UserError(f"--catalogue '{path}' has no column(s) {missing} (columns: {reader.fieldnames}); "
                            "set data.id_column / data.image_column")
        for n, row in enumerate(reader, 2):
            uid = (row.get(cfg.data.id_column) or "").strip() or f"row {n}"
            name = (row.get(cfg.data.image_column) or "").strip()
            entry = {"row": n, "id": uid, "image": name,
                     "text": text_lib.join_columns([[row.get(c) or ""] for c in columns])[0]}
            picture = os.path.realpath(os.path.join(images_dir, name)) if name else ""
            if not name:
                entry["error"] = "no picture named in the image column"
            elif os.path.commonpath([picture, os.path.realpath(images_dir)]) != os.path.realpath(images_dir) \
                    or not os.path.isfile(picture):
                entry["error"] = f"picture '{name}' is not a file in {cfg.data.images_dir}/"
            else:
                with open(picture, "rb") as fp:
                    entry["bytes"] = fp.read()
            rows.append(entry)
    return rows


def _predict_rows(client, rows: List[dict], with_text: bool, top_k: int) -> None:
    """Sets ``top_k`` (or ``error``) on each row. One request for all of them; when the server refuses it
    for one bad picture, each row is asked alone, so the bad ones get their reason and the others an
    answer. Raises the client's error when the server cannot answer at all."""
    from placedemarche.serving import client as client_lib

    def ask(part: List[dict]) -> None:
        texts = [r.get("text") or "" for r in part] if with_text else None
        result = client.predict([r["bytes"] for r in part], texts=texts)
        for r, ranked in zip(part, result.top_k(top_k)):
            r["top_k"] = [{"label": l, "probability": round(q, 6)} for l, q in ranked]

    if not rows:
        return
    try:
        ask(rows)
    except client_lib.InvalidRequestError:
        for r in rows:
            try:
                ask([r])
            except client_lib.InvalidRequestError as e:  # "instance 1 of 1 ('images'): why" → why
                r["error"] = re.sub(r"^instance 1 of 1(?: \('[^']*'\))?: ", "", e.message)


def _cmd_predict(args: argparse.Namespace) -> int:
    from placedemarche.serving import client as client_lib

    host, _, port = args.server.rpartition(":")
    if not host or not port.isdigit():
        raise common.UserError(f"--server '{args.server}' must look like HOST:PORT, e.g. localhost:8500")
    if bool(args.images) == bool(args.catalogue):
        raise common.UserError("give IMAGE files or --catalogue CSV (one of them)")
    if args.catalogue:
        if args.text is not None:
            raise common.UserError("--text goes with IMAGE files; --catalogue reads each row's own text")
        requests = _catalogue_requests(args)
    else:
        requests = []
        for path in args.images:
            if not os.path.isfile(path):
                raise common.UserError(f"image '{path}' does not exist")
            with open(path, "rb") as f:
                requests.append({"id": path, "image": path, "bytes": f.read(), "text": args.text})
    config = client_lib.ClientConfig(host=host, port=int(port), model_name=args.model, version=args.version,
                                     label=args.label, timeout_s=args.timeout)
    client = client_lib.make_client(args.protocol, config)
    answerable = [r for r in requests if "bytes" in r]
    with_text = any(r.get("text") is not None for r in answerable)
    try:
        if with_text and "text" not in client.input_names():
            logger.warning("the served model reads no text (its inputs: pictures only): the text is not sent")
            with_text = False
        _predict_rows(client, answerable, with_text, args.top_k)
    except client_lib.ServingClientError as e:  # the server or model is unavailable: nothing can be answered
        print(f"placedemarche predict: error: {e}", file=sys.stderr)
        return common.EXIT_FAILED
    out = []
    for r in requests:
        entry = {k: r[k] for k in ("id", "image") if k in r}
        if "row" in r:
            entry["row"] = r["row"]
        if "top_k" in r:
            entry["top_k"] = r["top_k"]
        else:
            entry["error"] = r["error"]
        out.append(entry)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for entry in out:
            where = f"row {entry['row']} ({entry['id']})" if "row" in entry else entry["id"]
            if "error" in entry:
                print(f"{where}: not predicted: {entry['error']}")
            else:
                print(f"{where}: " + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in entry["top_k"]))
    failed = sum("error" in e for e in out)
    if failed:
        print(f"{failed} of {len(out)} rows not predicted", file=sys.stderr)
    return common.EXIT_OK if not failed else common.EXIT_FAILED


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
        raise common.UserError("give --out DIR and / or --configmap FILE")
    return common.EXIT_OK



def _cmd_skew(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import outputs, pipeline as pipeline_lib, run_reader, skew

    cfg = config_lib.load_config(args.config, args.overrides)
    run_dir = os.path.abspath(args.output)
    try:
        store = run_reader.open_store(run_dir)
    except run_reader.RunNotFound as e:
        raise common.UserError(str(e)) from e
    node = outputs.latest_node_run(store, cfg.name, pipeline_lib.EXAMPLE_GEN)
    if node is None or node.state not in outputs.DONE_STATES or "examples" not in node.outputs:
        raise common.UserError(f"no completed ingestion in {run_dir}: run 'placedemarche run --output {args.output}' first")
    try:
        report = skew.compare(skew.training_rows(node.outputs["examples"][0]), skew.request_rows(args.requests),
                              skew.Thresholds(cfg.serving.skew_linf, cfg.serving.skew_jsd))
    except skew.SkewError as e:
        raise common.UserError(str(e)) from e
    skew.write_report(run_dir, report, args.requests)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"served requests ({report['request_rows']} pictures) vs training ({report['training_rows']} examples), "
              f"TFDV statistics; report: {report['folder']}")
        for m in report["measurements"]:
            print(f"  {'MOVED' if m['moved'] else 'ok':<6} {m['feature']:<15} {m['measure']} {m['value']:.4f} "
                  f"(threshold {m['threshold']})")
        if not report["measurements"]:
            print("  TFDV measured nothing (no feature had statistics on both sides)")
    return common.EXIT_FAILED if report["moved"] else common.EXIT_OK


def register(sub) -> None:
    """Adds this group's subcommands to ``sub`` (the top-level parser's subparsers)."""
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
    p.add_argument("--host", default="127.0.0.1",
                   help="local stand-in: the interface both ports bind to (default 127.0.0.1, this machine only; "
                        "0.0.0.0 in a container so a Service can reach it)")
    p.add_argument("--label", action="append", default=[], metavar="NAME=VERSION", help="version label (repeatable)")
    p.add_argument("--local", action="store_true", help="use the local stand-in even if TF Serving is installed")
    common.add_config_arguments(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "skew", help="compare logged served requests with a run's training data (TFDV); exit 1 when something moved",
        description="Reads the request log of 'serve' (serving.request_log_dir) and the train split of RUN_DIR's "
                    "latest ingestion; TFDV compares picture format and size, text length and the predicted "
                    "labels with the training labels. Exit status 1 when a measure passes its threshold "
                    "(serving.skew_linf, serving.skew_jsd).")
    p.add_argument("--requests", required=True, metavar="DIR", help="the request log folder")
    p.add_argument("--output", required=True, metavar="RUN_DIR", help="the run folder whose training data is compared")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    common.add_config_arguments(p)
    p.set_defaults(func=_cmd_skew)

    p = sub.add_parser(
        "predict",
        help="ask a running TF Serving (or the local stand-in) for listings' categories",
        description=(
            "Sends each IMAGE (with --text, the listing's words: one text for all pictures) or each row of "
            "--catalogue CSV (the catalogue's format: its picture from the images folder next to the CSV, its "
            "product_name and description) to the served model and prints the top-k categories with "
            "probabilities. A model that reads text answers an image-only request from the picture alone. Rows "
            "whose picture is missing are listed with the reason (exit status 1)."
        ),
    )
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--text", help="the listing's name and description, sent with every IMAGE")
    p.add_argument("--catalogue", metavar="CSV", help="predict every row of a catalogue CSV (pictures in its "
                   "images folder, data.images_dir)")
    p.add_argument("--text-columns", default="product_name,description", metavar="COLS",
                   help="with --catalogue: the columns joined into the text (default: product_name,description)")
    p.add_argument("--server", required=True, metavar="HOST:PORT", help="gRPC port (8500) or REST port (8501)")
    p.add_argument("--protocol", choices=["grpc", "rest"], default="grpc")
    p.add_argument("--model", default="product_category", help="model name (default: product_category)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="a version (default: the latest)")
    which.add_argument("--label", help="a version label, e.g. stable")
    p.add_argument("--top-k", type=int, default=3, metavar="K")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--json", action="store_true")
    common.add_config_arguments(p)
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
    common.add_config_arguments(p)
    p.set_defaults(func=_cmd_serving_config)

