"""``categorize``: give every listing of a catalogue its category with a pushed model.

    placedemarche categorize --data DIR --out OUT [--model DIR | --server HOST:PORT] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from placedemarche.pipeline import config as config_lib
from placedemarche.pipeline.cli import common

logger = logging.getLogger(__name__)
# --runner beam on the local DirectRunner, unless runner.beam_args says otherwise: two worker threads,
# so that preparing one bundle's pictures overlaps the model's work on another.
BEAM_DEFAULT_ARGS = ("--direct_num_workers=2", "--direct_running_mode=multi_threading")


def _model(args: argparse.Namespace, cfg: config_lib.PipelineConfig):
    from placedemarche.components.categorizer import categorize as lib

    if bool(args.model) == bool(args.server):
        raise common.UserError("give --model DIR (a pushed model folder) or --server HOST:PORT (one of them)")
    if args.model:
        try:
            return lib.LocalModel.load(args.model)
        except FileNotFoundError as e:
            raise common.UserError(str(e)) from e
    from placedemarche.serving import client as client_lib

    host, _, port = args.server.rpartition(":")
    if not host or not port.isdigit():
        raise common.UserError(f"--server '{args.server}' must look like HOST:PORT, e.g. localhost:8500")
    try:
        config = client_lib.ClientConfig(
            host=host, port=int(port), model_name=args.model_name or cfg.serving.model_name, version=args.version,
            label=args.label, timeout_s=args.timeout, max_batch_size=cfg.categorize.batch_size)
    except ValueError as e:  # e.g. a version and a label
        raise common.UserError(f"--version / --label: {e}") from e
    client = client_lib.make_client(args.protocol, config)
    try:
        columns = [c.strip() for c in args.text_columns.split(",") if c.strip()]
        return lib.ServedModel(client, columns)
    except client_lib.ServingClientError as e:
        raise common.UserError(f"the server at {args.server} cannot answer for model "
                               f"'{client.config.model_name}': {e}") from e


class _Found:
    """A pushed model found, not loaded (``--runner beam`` loads it in the job's workers)."""

    def __init__(self, path: str, name: str, version):
        self.path, self.name, self.version, self.where = path, name, version, path


def _cmd_categorize(args: argparse.Namespace) -> int:
    from placedemarche.components.catalogue_example_gen import catalogue, executor as ingest_executor
    from placedemarche.components.categorizer import categorize as lib
    from placedemarche.serving import client as client_lib

    if args.runner == "beam" and not args.model:
        raise common.UserError("--runner beam goes with --model (a served model is asked through its server)")
    cfg = common.config_with_data(args)
    data = cfg.data
    if "://" in (data.data_dir or ""):
        raise common.UserError(f"--data '{data.data_dir}': categorize reads a catalogue on this machine's filesystem; "
                               "copy it here first (the pipeline's BatchCategorizer reads gs:// artifacts)")
    out_dir = os.path.abspath(args.out)
    existing = lib.existing_outputs(out_dir)
    if existing and not args.overwrite:
        raise common.UserError(f"--out '{args.out}' already holds {', '.join(existing)} (a reviewer may be "
                               "filling its queue): choose another folder, or add --overwrite")
    try:
        csv_path = ingest_executor.find_csv(data.data_dir, data.csv_file)
        with open(csv_path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8-sig")
    except FileNotFoundError as e:
        raise common.UserError(str(e)) from e
    except UnicodeDecodeError as e:
        raise common.UserError(f"'{csv_path}' is not UTF-8 text (byte {e.start}); save the catalogue as UTF-8") \
            from None
    try:
        listings, rejected, total = lib.read_listings(
            text, catalogue.Columns(data.id_column, data.image_column, data.category_column), data.label_depth)
    except ValueError as e:
        raise common.UserError(f"'{csv_path}': {e}") from e
    if args.runner == "beam":  # the job loads the model in its workers: only find it here
        try:
            model = _Found(*lib.LocalModel.resolve(args.model))
        except FileNotFoundError as e:
            raise common.UserError(str(e)) from e
    else:
        model = _model(args, cfg)
    options = lib.Options(
        images_dir=os.path.join(data.data_dir, data.images_dir), max_image_side=data.max_image_side,
        min_image_side=data.min_image_side, max_image_pixels=data.max_image_pixels,
        max_image_bytes=data.max_image_bytes, jpeg_quality=data.jpeg_quality, batch_size=cfg.categorize.batch_size,
        flag_threshold=cfg.categorize.flag_threshold, review_threshold=cfg.categorize.review_threshold,
        workers=cfg.categorize.workers)
    if not args.quiet:
        print(f"categorising {len(listings)} listings of {csv_path} with {model.name} version "
              f"{model.version if model.version is not None else '?'} ({model.where}); {len(rejected)} of "
              f"{total} rows refused by the CSV checks", file=sys.stderr, flush=True)
    if args.runner == "beam":
        import shlex
        import tempfile

        from placedemarche.components.categorizer import beam_job

        beam_args = shlex.split(cfg.runner.beam_args) or list(BEAM_DEFAULT_ARGS)
        if not args.quiet:
            print(f"Beam job (RunInference), {' '.join(beam_args)}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="categorize-") as scratch:
            result = beam_job.categorize_with_beam(listings, model.path, options, scratch, beam_args)
    else:
        from tqdm import tqdm

        with tqdm(total=len(listings), unit="listing", disable=args.quiet, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            try:
                result = lib.categorize(listings, model, options, progress=bar.update)
            except client_lib.ServingClientError as e:  # the server went away: nothing is written
                print(f"placedemarche categorize: error: the server stopped answering: {e}", file=sys.stderr)
                return common.EXIT_FAILED
    result.rejected[:0] = rejected
    summary = lib.write_outputs(out_dir, result, total, listings)
    summary["csv"] = csv_path
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(f"{summary['rows']} rows: {summary['predicted']} categorised, {summary['rejected']} rejected"
              + (f" ({', '.join(f'{k} {v}' for k, v in summary['rejected_by_reason'].items())})"
                 if summary["rejected"] else ""))
        if summary["with_seller_category"]:
            print(f"seller categories: {summary['agree_with_seller']} of {summary['with_seller_category']} agree with "
                  f"the model; {summary['seller_category_suspect']} flagged {lib.C.SUSPECT} (the model says another "
                  f"category with probability >= {options.flag_threshold})")
        print(f"review queue: {summary['review_queue']} listings (top probability < {options.review_threshold}, "
              "or suspect)")
        print(f"{summary['seconds']} s, {summary['listings_per_s']} listings/s")
        for name, path in summary["outputs"].items():
            print(f"  {name:<13}{path}")
    return common.EXIT_OK


def register(sub) -> None:
    p = sub.add_parser(
        "categorize",
        help="give every listing of a catalogue its category with a pushed model (predictions, rejected rows, "
             "suspicious seller categories, a review queue)",
        description="Categorises every row of a catalogue (the usual CSV + images folder; the category column is "
                    "optional) with a pushed model, in this process (--model) or through TF Serving (--server). "
                    "Writes OUT/predictions.csv, OUT/rejected.csv (rows that cannot be categorised, with their "
                    "line and reason), OUT/review_queue.csv (highest stakes first; fill its reviewed_category "
                    "column) and OUT/summary.json.",
    )
    p.add_argument("--data", required=True, metavar="DIR",
                   help="catalogue folder: one CSV (the category column optional) and its images folder")
    p.add_argument("--out", required=True, metavar="OUT", help="folder for the outputs (created)")
    p.add_argument("--model", metavar="DIR",
                   help="a pushed model: a version folder, or <serving_root>/<model_name> (its newest complete version)")
    p.add_argument("--server", metavar="HOST:PORT", help="ask TF Serving (or 'placedemarche serve') instead")
    p.add_argument("--protocol", choices=("grpc", "rest"), default="grpc", help="with --server (default: grpc)")
    p.add_argument("--model-name", help="with --server: the served model's name (default: serving.model_name)")
    p.add_argument("--version", type=int, help="with --server: a version (default: the newest available)")
    p.add_argument("--label", help="with --server: a version label, e.g. stable")
    p.add_argument("--timeout", type=float, default=60.0, help="with --server: seconds per request (default: 60)")
    p.add_argument("--text-columns", default="product_name,description",
                   help="with --server: the columns joined into the text a text model reads (a --model reads its "
                        "own list from its metadata)")
    p.add_argument("--runner", choices=("threads", "beam"), default="threads",
                   help="with --model: 'threads' (default: this process, pictures prepared by threads one batch "
                        "ahead of the model, a progress bar) or 'beam' (a Beam job with RunInference, on "
                        "runner.beam_args' runner: the DirectRunner with 2 threads unless set, or Dataflow / Flink "
                        "/ Spark)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs already in OUT")
    p.add_argument("--json", action="store_true", help="print the counts, throughput and output paths as JSON")
    common.add_config_arguments(p)
    p.set_defaults(func=_cmd_categorize)
