"""Where a Trainer's exported model lives, and its labels in output order (the model contract's readers)."""

from placedemarche.serving.model_contract import read_labels, serving_dir

__all__ = ["read_labels", "serving_dir"]
