"""Review commands: ``review`` (why each candidate was or was not blessed) and ``override`` (a reviewer's push or rollback)."""

from __future__ import annotations

import argparse
import json
import logging
import os

from placedemarche.pipeline import config as config_lib
from placedemarche.pipeline.cli import common

logger = logging.getLogger(__name__)


def _cmd_review(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import review as review_lib

    cfg = config_lib.load_config(args.config, args.overrides)
    run_dir = os.path.abspath(args.output)
    try:
        review = review_lib.gather(cfg, run_dir)
    except review_lib.ReviewError as e:
        raise common.UserError(str(e)) from e
    review["html"] = review_lib.write_html(review, args.html)
    print(review_lib.to_json(review) if args.json else review_lib.render_text(review))
    return common.EXIT_OK


def _cmd_override(args: argparse.Namespace) -> int:
    from placedemarche.pipeline import review as review_lib

    cfg = config_lib.load_config(args.config, args.overrides)
    action = review_lib.PUSH if args.push else review_lib.ROLLBACK
    try:
        record = review_lib.record_override(cfg, os.path.abspath(args.output), action, args.reason,
                                            user=args.user, rollback_to=args.rollback_to, candidate=args.candidate)
    except review_lib.ReviewError as e:
        raise common.UserError(str(e)) from e
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        what = f" of candidate {record['candidate']}" if record.get("candidate") else ""
        print(f"{record['action']}{what} by {record['user']}: {record['source']} is now version "
              f"{record['served_version']} ({record['destination']}); recorded in the metadata store")
    return common.EXIT_OK



def register(sub) -> None:
    """Adds this group's subcommands to ``sub`` (the top-level parser's subparsers)."""
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
    common.add_config_arguments(p)
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
    common.add_config_arguments(p)
    p.set_defaults(func=_cmd_override)

