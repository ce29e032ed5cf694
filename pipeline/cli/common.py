"""What every command shares: exit statuses, the user-error type, config and run arguments, logging."""

from __future__ import annotations

import argparse
import atexit
import io
import logging
import os
import re
import sys
import threading

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


DATA_HELP = ("catalogue folder: one CSV and its images folder, or one sub-folder per batch (DIR/<batch>/ with "
             "its CSV and images folder, ordered by name) (default: the generated sample)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --output RUN_DIR, --json and the config arguments of the pipeline-running commands."""
    parser.add_argument("--data", metavar="DIR", help=DATA_HELP)
    parser.add_argument(
        "--output", required=True, metavar="RUN_DIR", help="run folder (created; reused for caching)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--reviews", metavar="FILE", action="append", default=[],
        help="a filled review queue (review_queue.csv of 'categorize', its reviewed_category column filled): "
             "reviewed categories become labels, overriding the seller's (repeatable; data.reviews)")
    add_config_arguments(parser)


def config_with_data(args: argparse.Namespace) -> config_lib.PipelineConfig:
    cfg = config_lib.load_config(args.config, args.overrides)
    if getattr(args, "data", None):
        data_dir = os.path.abspath(args.data) if "://" not in args.data else args.data
        if "://" not in data_dir and not os.path.isdir(data_dir):
            raise UserError(f"--data '{args.data}' is not a folder (it must hold the CSV and Images/)")
        cfg = cfg.replace(**{"data.data_dir": data_dir})
    if getattr(args, "reviews", None):
        cfg = cfg.replace(**{"data.reviews": tuple(cfg.data.reviews) + tuple(os.path.abspath(r) for r in args.reviews)})
    if cfg.data.reviews:
        from placedemarche.components.categorizer import reviews as reviews_lib

        try:
            reviews_lib.load(cfg.data.reviews)  # read again when the pipeline is built; errors shown here first
        except reviews_lib.ReviewsError as e:
            raise UserError(str(e)) from e
    return cfg


def fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# Log messages of libraries that are expected, understood and say nothing a user can act on.
_KNOWN_LOG_NOISE = (
    # Models are exported without custom gradients on purpose (components/trainer/export.py: nothing
    # differentiates a served model), so every load of one would warn that a gradient "will likely fail".
    "unsaved custom gradients",
    # TFX's resolver, for the optional inputs of our components (the Trainers' features / hyperparameters).
    "ArtifactQuery.property_predicate is not supported",
)


class _UnsavedGradientsFilter(logging.Filter):
    """Drops the library log messages in ``_KNOWN_LOG_NOISE`` (shown with --verbose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in _KNOWN_LOG_NOISE)


# What TensorFlow's C++ runtime prints on stderr when it starts on a machine without a GPU or
# TensorRT: it reads like errors ("E ... Unable to register cuDNN factory") but is not one.
NATIVE_STARTUP_NOISE = re.compile(
    r"Unable to register (cuDNN|cuFFT|cuBLAS) factory|oneDNN custom operations are on|"
    r"TF-TRT Warning: Could not find TensorRT|This TensorFlow binary is optimized to use available CPU|"
    r"rebuild TensorFlow with the appropriate compiler flags|Could not find cuda drivers on your machine|"
    r"cuda_executor.cc.*could not open file to read NUMA node|"
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR|"
    r"Local rendezvous is aborting with status: OUT_OF_RANGE: End of sequence"
)


def filter_native_stderr() -> None:
    """Hides TensorFlow's start-up noise (``NATIVE_STARTUP_NOISE``) from this process's stderr.

    TensorFlow's C++ runtime writes to file descriptor 2 directly, before and outside Python's
    logging, so the filter sits at the descriptor: fd 2 becomes a pipe read by a thread that drops
    the known noise lines and passes every other line through unchanged (real errors still show).
    Call it once, before TensorFlow is imported; ``--verbose`` does not call it.
    """
    global _STDERR_FILTER_ON
    if _STDERR_FILTER_ON:
        return
    try:
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no real fd 2 (embedded interpreters): leave stderr alone
        return
    _STDERR_FILTER_ON = True

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as source:
            pending = b""
            while True:
                chunk = source.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not NATIVE_STARTUP_NOISE.search(line.decode("utf-8", "replace")):
                        os.write(original, line + b"\n")
            if pending:
                os.write(original, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    wrapper = io.TextIOWrapper(os.fdopen(os.dup(2), "wb", buffering=0), encoding="utf-8",
                               errors="backslashreplace", write_through=True)
    previous, sys.stderr = sys.stderr, wrapper

    def drain() -> None:
        """At exit: close every write end of the pipe so the thread sees its end, and let it finish."""
        for stream in (wrapper, previous):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(original, 2)
        sys.stderr = previous
        wrapper.close()
        thread.join(timeout=5)

    atexit.register(drain)


_STDERR_FILTER_ON = False


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
    if not verbose:
        filter_native_stderr()
