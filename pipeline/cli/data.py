"""Data commands: ``make-sample`` (the generated catalogue), ``ingest`` (the data stages and their report), ``schema`` (a curated schema from a catalogue's statistics)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from placedemarche.pipeline.cli import common

logger = logging.getLogger(__name__)


def _cmd_make_sample(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import sample_data  # heavy imports (pandas, PIL) only when needed

    factors = {}
    for item in args.category_factor or []:
        name, sep, value = item.rpartition("=")
        try:
            factors[name] = float(value)
        except ValueError:
            name = ""
        if not sep or not name:
            raise common.UserError(f"--category-factor '{item}' must be CATEGORY=FACTOR, e.g. 'Watches=3'")
    try:
        csv_path = sample_data.make_sample(
            args.out, per_class=args.per_class, seed=args.seed, defects=args.defects,
            show_progress=not args.quiet, category_factors=factors, size_factor=args.size_factor,
        )
    except (ValueError, FileExistsError) as e:
        raise common.UserError(str(e)) from e
    print(f"catalogue written: {csv_path}")
    print(f"images folder:     {csv_path.parent / sample_data.IMAGES_DIR}")
    print(f"defect manifest:   {csv_path.parent / sample_data.MANIFEST_NAME}")
    return common.EXIT_OK


def _cmd_ingest(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import local_runner

    run_dir = os.path.abspath(args.output)
    cfg = local_runner.with_data(common.config_with_data(args), run_dir, show_progress=not args.quiet)
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
    return common.EXIT_OK if failure is None else common.EXIT_FAILED


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
        batches = report.get("batches")
        if batches and (len(batches["all"]) > 1 or batches["window"][0]["name"]):
            print(f"\nbatches: {len(batches['window'])} of {len(batches['all'])} trained on (data.window_batches)")
            for b in batches["window"]:
                split = "/".join(str(n) for n in b["examples"].values())
                print(f"  span {b['span']} {b['name']:<20} {b['rows']:>6} rows  {sum(b['examples'].values()):>6} examples "
                      f"({split} {'/'.join(b['examples'])})  "
                      f"{b['quarantined']:>4} quarantined  {b['superseded']:>4} superseded by a newer batch  "
                      f"{b['unlabelled']:>4} unlabelled")
        drift = report.get("drift")
        if drift and drift["compared"]:
            moved = "; ".join(f"{m['feature']} {m['measure']} {m['value']:.4f} > {m['threshold']}" for m in drift["moved"])
            print(f"drift gate: batch {drift['newest_batch']} vs {drift['previous_batch']}: "
                  + (f"DRIFTED, accepted (data.accept_drift=true): {moved}" if drift["accepted"] else
                     "nothing moved past its threshold") + f" ({drift['folder']})")
        elif drift:
            print(f"drift gate: {drift['reason']}")
        without = report.get("examples_without_text") or {}
        if without:
            print("kept without text (the models answer from the picture): "
                  + ", ".join(f"{n} {'with neither' if c == 'no_text' else 'without ' + c}" for c, n in without.items()))
        reviews = report.get("reviews")
        if reviews:
            print(f"\nreviews: {reviews['applied']} of {reviews['reviewed']} reviewed listings applied "
                  f"({reviews['overrode_seller']} overrode the seller's category, {reviews['confirmed_seller']} "
                  f"confirmed it, {reviews['labelled_without_category']} had none); "
                  f"{len(reviews['conflicts'])} not applied (see the notices)")
            for f in reviews["files"]:
                print(f"  {f['path']} (sha256 {f['sha256'][:12]}, {f['reviewed_rows']} reviewed rows)")
        if report.get("unlabelled"):
            n = report["unlabelled"]
            print(f"\nunlabelled: {n} listing{'s' if n != 1 else ''} without a category, kept apart (not trained on); "
                  "a run categorises them with the pushed model (BatchCategorizer)")
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


def _cmd_schema(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import local_runner

    run_dir = os.path.abspath(args.work_dir)
    cfg = local_runner.with_data(common.config_with_data(args), run_dir, show_progress=not args.quiet)
    try:
        schema, labels = local_runner.curated_schema(cfg, run_dir, args.schema_out)
    except local_runner.PipelineFailed as e:
        raise common.UserError(f"ingestion failed, no schema written: {e}") from e
    print(f"schema written: {args.schema_out} ({len(schema.feature)} features, labels: {', '.join(labels)})")
    print(f"use it with --set data.schema_file={args.schema_out}, or copy it over "
          "pipeline/schema/schema.pbtxt to make it the default")
    return common.EXIT_OK


def register(sub) -> None:
    """Adds this group's subcommands to ``sub`` (the top-level parser's subparsers)."""
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
    p.add_argument("--category-factor", action="append", metavar="CATEGORY=FACTOR",
                   help="that many times --per-class products of one category (repeatable), e.g. 'Watches=3': "
                        "a catalogue batch where one category floods in")
    p.add_argument("--size-factor", type=float, default=1.0, metavar="F",
                   help="pictures F times wider and taller (default 1), e.g. 3: a batch of bigger photos")
    p.set_defaults(func=_cmd_make_sample)

    p = sub.add_parser(
        "ingest",
        help="check a catalogue: ingestion, statistics and schema validation only (no training)",
        description=(
            "Runs the pipeline's first stages locally (CatalogueExampleGen -> StatisticsGen -> "
            "ImportSchemaGen -> ExampleValidator, DriftGate -> DataValidationGate) on the Beam DirectRunner "
            "with a SQLite metadata store in RUN_DIR, then prints examples per split and label and per "
            "catalogue batch (DATA/<batch>/ folders), the quarantined rows by reason, the drift gate's "
            "decision (newest batch vs the previous one) and the schema anomalies. Exit status 1 when too "
            "many rows were quarantined (data.max_quarantine_fraction), the newest batch drifted "
            "(data.drift_linf / data.drift_jsd; --set data.accept_drift=true lets it through) or the data "
            "has anomalies. Without --data it ingests the generated sample catalogue."
        ),
    )
    common.add_run_arguments(p)
    p.set_defaults(func=_cmd_ingest)

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
    p.add_argument("--data", metavar="DIR", help=common.DATA_HELP)
    p.add_argument("--output", dest="schema_out", required=True, metavar="FILE", help="schema file to write")
    p.add_argument("--work-dir", required=True, metavar="DIR", help="run folder for the ingestion it needs")
    common.add_config_arguments(p)
    p.set_defaults(func=_cmd_schema)

