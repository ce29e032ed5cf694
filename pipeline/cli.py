"""The ``placedemarche`` command line.

Each subcommand is a thin layer over a library function; errors a user can fix (bad config, bad
paths) are printed as one ``error:`` line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from pipeline import config as config_lib

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


def _cmd_make_sample(args: argparse.Namespace) -> int:
    from pipeline import sample_data  # heavy imports (pandas, PIL) only when needed

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="placedemarche",
        description=(
            "Product-photo categorisation for the Place de Marche marketplace: a TFX pipeline that "
            "ingests a catalogue (CSV + images), trains an EfficientNet-B7 transfer model against a "
            "VGG19 baseline and serves the blessed model with TensorFlow Serving."
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
    return parser


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs one subcommand; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        return args.func(args)
    except (UserError, config_lib.ConfigError) as e:
        print(f"placedemarche {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
