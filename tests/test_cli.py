"""The command line: every subcommand's help describes a working command; errors are one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from placedemarche.pipeline.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_help_lists_every_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "placedemarche.pipeline.cli", "--help"], capture_output=True, text=True, check=True
    )
    for name in _subcommands():
        assert name in result.stdout
    assert "placeholder" not in result.stdout.lower() and "todo" not in result.stdout.lower()


@pytest.mark.parametrize("command", _subcommands())
def test_each_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"placedemarche {command}" in out
    assert len(out.splitlines()) > 3


def test_config_prints_the_effective_config_as_yaml(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  epochs: 9\n")
    assert main(["config", "--config", str(path), "--set", "candidates.b7_text.backbone=vgg16"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["training"]["epochs"] == 9
    assert [(c["name"], c["backbone"]) for c in printed["candidates"]] == [
        ("b7_image", "efficientnet_b7"), ("b7_text", "vgg16")]
    assert printed["baseline"]["backbone"] == "vgg19"


def test_config_keys_lists_defaults(capsys):
    assert main(["config", "--keys"]) == 0
    out = capsys.readouterr().out
    assert "candidates.b7_image.backbone = 'efficientnet_b7'" in out
    assert "candidates.b7_text.text_columns = ['product_name', 'description']" in out
    assert "baseline.augmentation = True" in out


def test_config_error_is_one_line_with_status_2(capsys):
    assert main(["config", "--set", "training.epochs=-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "placedemarche config: error: config key 'training.epochs' (from --set) must be >= 0, got -5"
    )


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "placedemarche"  # the venv's bin/, active or not
    result = subprocess.run([str(script), "config", "--set", "training.epochs=2"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["training"]["epochs"] == 2


def test_unsaved_gradient_load_warning_is_dropped_unless_verbose():
    """Models are exported without custom gradients on purpose; their loads must not warn users."""
    import logging

    from placedemarche.pipeline.cli import common as cli

    absl_logger = logging.getLogger("absl")

    def shown(message: str) -> bool:
        return absl_logger.filter(absl_logger.makeRecord("absl", logging.WARNING, __file__, 1, message, (), None))

    expected = "Importing a function (__inference_x_1) with ops with unsaved custom gradients. Will likely fail"
    try:
        cli.setup_logging(verbose=False, quiet=False)
        cli.setup_logging(verbose=False, quiet=True)  # set up twice (tests, embedding): one filter
        assert absl_logger.filters.count(cli._UNSAVED_GRADIENTS_FILTER) == 1
        assert not shown(expected)
        assert shown("some other TensorFlow warning")
        cli.setup_logging(verbose=True, quiet=False)
        assert shown(expected)
    finally:
        absl_logger.removeFilter(cli._UNSAVED_GRADIENTS_FILTER)


def test_quiet_turns_progress_off_for_the_command_only(monkeypatch):
    import os

    from placedemarche.components.trainer import train
    from placedemarche.pipeline import cli
    from placedemarche.pipeline.cli import run as run_commands

    seen = []
    monkeypatch.setattr(run_commands, "_cmd_config", lambda args: seen.append(os.environ.get(train.NO_PROGRESS_ENV)) or 0)
    monkeypatch.delenv(train.NO_PROGRESS_ENV, raising=False)
    assert cli.main(["-q", "config"]) == 0
    assert cli.main(["config"]) == 0
    assert seen == ["1", None]
    assert train.NO_PROGRESS_ENV not in os.environ  # restored after the command


def test_tensorflow_startup_noise_is_hidden_but_real_errors_show():
    """TensorFlow's C++ start-up lines ("Unable to register cuDNN factory", oneDNN, TensorRT) read like
    errors; without --verbose the CLI drops them at the file descriptor, and lets everything else through."""
    script = (
        "import os, sys, logging\n"
        "from placedemarche.pipeline.cli import common\n"
        "common.setup_logging(verbose=len(sys.argv) > 1, quiet=False)\n"
        "import tensorflow as tf\n"
        "tf.constant(1)\n"
        "os.write(2, b'E tensorflow: Unable to register cuDNN factory: Attempting to register\\n')\n"
        "os.write(2, b'a real native error\\n')\n"
        "logging.getLogger('placedemarche.test').warning('our own warning')\n"
    )
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "a real native error" in quiet.stderr and "our own warning" in quiet.stderr
    assert "Unable to register" not in quiet.stderr and "oneDNN" not in quiet.stderr
    verbose = subprocess.run([sys.executable, "-c", script, "--verbose"], capture_output=True, text=True, timeout=120)
    assert "Unable to register cuDNN factory" in verbose.stderr  # shown with --verbose
