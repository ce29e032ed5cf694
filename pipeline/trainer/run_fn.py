"""The TFX Trainer entry point (``Trainer(run_fn="placedemarche.pipeline.trainer.run_fn.run_fn")``)."""

from __future__ import annotations

from typing import List, Optional

from tfx import v1 as tfx
from tensorflow_metadata.proto.v0 import schema_pb2

from placedemarche.pipeline.trainer.trainer import TrainSpec, fit_and_export


def _label_domain(schema_path: Optional[str]) -> Optional[List[str]]:
    if not schema_path:
        return None
    schema: schema_pb2.Schema = tfx.utils.parse_pbtxt_file(schema_path, schema_pb2.Schema())
    for domain in schema.string_domain:
        if domain.name == "label":
            return sorted(domain.value)
    return None


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Unpacks FnArgs and trains + exports; ``custom_config`` holds the model and training sections."""
    config = fn_args.custom_config
    fit_and_export(
        TrainSpec.from_dicts(config["model"], config["training"]),
        train_files=fn_args.train_files,
        eval_files=fn_args.eval_files,
        serving_model_dir=fn_args.serving_model_dir,
        model_run_dir=fn_args.model_run_dir,
        vocabulary=_label_domain(fn_args.schema_path),
    )
