"""The ``placedemarche`` command line, one module per command group.

Each group module (``data``, ``run``, ``review``, ``explain``, ``serving``, ``categorize``) registers its
subcommands' parsers and handlers; each handler is a thin layer over a library function. Errors a
user can fix (bad config, bad paths) are printed as one ``error:`` line and exit with status 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from placedemarche.pipeline import config as config_lib
from placedemarche.pipeline.cli import categorize, common, data, explain, review, run, serving
from placedemarche.pipeline.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UserError

GROUPS = (data, run, review, explain, serving, categorize)
__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UserError", "build_parser", "main"]


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

    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs one subcommand; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    common.setup_logging(args.verbose, args.quiet)
    # The Trainers' progress bars are drawn in this process (local runner); -q turns them off.
    previous = os.environ.get(common.NO_PROGRESS_ENV)
    if args.quiet:
        os.environ[common.NO_PROGRESS_ENV] = "1"
    try:
        return args.func(args)
    except (common.UserError, config_lib.ConfigError) as e:
        print(f"placedemarche {args.command}: error: {e}", file=sys.stderr)
        return common.EXIT_USAGE
    finally:
        if previous is None:
            os.environ.pop(common.NO_PROGRESS_ENV, None)
        else:
            os.environ[common.NO_PROGRESS_ENV] = previous

