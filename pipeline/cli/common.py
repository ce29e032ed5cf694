"""What every command shares: exit statuses, the user-error type, config and run arguments, logging."""

from __future__ import annotations

import argparse
import logging
import os

from placedemarche.pipeline import config as config_lib

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UserError(Exception):
    """A problem the user can fix from the message alone (no traceback is shown)."""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
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


DATA_HELP = "catalogue folder: one CSV and its images folder (default: the generated sample)"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --output RUN_DIR, --json and the config arguments of the pipeline-running commands."""
    parser.add_argument("--data", metavar="DIR", help=DATA_HELP)
    parser.add_argument(
        "--output", required=True, metavar="RUN_DIR", help="run folder (created; reused for caching)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_config_arguments(parser)


def config_with_data(args: argparse.Namespace) -> config_lib.PipelineConfig:
    cfg = config_lib.load_config(args.config, args.overrides)
    if getattr(args, "data", None):
        data_dir = os.path.abspath(args.data) if "://" not in args.data else args.data
        if "://" not in data_dir and not os.path.isdir(data_dir):
            raise UserError(f"--data '{args.data}' is not a folder (it must hold the CSV and Images/)")
        cfg = cfg.replace(**{"data.data_dir": data_dir})
    return cfg


def fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


class _UnsavedGradientsFilter(logging.Filter):
    """Drops TensorFlow's "Importing a function ... with ops with unsaved custom gradients" warning.

    Models are exported without custom gradients on purpose (``components/trainer/export.py``:
    nothing differentiates a served model), so every load of one would otherwise warn that taking a
    gradient "will likely fail". Shown with --verbose.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "unsaved custom gradients" not in record.getMessage()


_UNSAVED_GRADIENTS_FILTER = _UnsavedGradientsFilter()
NO_PROGRESS_ENV = "PLACEDEMARCHE_NO_PROGRESS"  # components.trainer.train.NO_PROGRESS_ENV (not imported: TF)


def setup_logging(verbose: bool, quiet: bool) -> None:
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

