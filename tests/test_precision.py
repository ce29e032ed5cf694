"""bfloat16 where the hardware has it: detection and fallback, the backbone's compute, the exported model's dtype."""

from __future__ import annotations

import json
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from placedemarche.components.backbone_features import constants as features_constants
from placedemarche.components.trainer import backbones
from placedemarche.components.trainer import features as features_lib
from placedemarche.components.trainer import precision
from placedemarche.components.trainer import train as train_lib
from placedemarche.components.trainer.trainer import TrainSpec, fit_and_export
from placedemarche.pipeline import pipeline as pipeline_lib
from placedemarche.pipeline.config import ConfigError, load_config
from placedemarche.pipeline.review.rendering import dtypes
from placedemarche.serving import model_contract


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])


def test_auto_falls_back_to_float32_without_native_bfloat16_and_says_so(no_accelerator, monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: {"avx2", "avx512f", "fma"})
    with caplog.at_level(logging.INFO, logger="placedemarche.components.trainer.precision"):
        dtype, why = precision.resolve("auto", "training.compute_dtype")
    assert dtype == "float32"
    assert "lacks avx512_bf16 / amx_bf16" in why and "so float32" in why
    assert any("training.compute_dtype auto:" in r.getMessage() and "float32" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_picks_bfloat16_where_the_cpu_has_it(no_accelerator, monkeypatch, flag):
    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: {"avx512f", flag})
    dtype, why = precision.resolve("auto", "serving.compute_dtype")
    assert dtype == "bfloat16" and flag in why


def test_a_gpu_from_compute_capability_8_counts_as_native(monkeypatch):
    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu] if kind == "GPU" else [])
    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: set())
    for capability, native in (((7, 5), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(tf.config.experimental, "get_device_details",
                            lambda d, c=capability: {"device_name": "NVIDIA X", "compute_capability": c})
        assert precision.native_bfloat16()[0] is native


def test_forced_bfloat16_without_native_support_warns(no_accelerator, monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: set())
    with caplog.at_level(logging.WARNING):
        assert precision.resolve("bfloat16", "training.compute_dtype")[0] == "bfloat16"
    assert "expect it to be slower" in caplog.text
    with pytest.raises(ValueError, match="float32, bfloat16, auto"):
        precision.resolve("float16", "training.compute_dtype")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\nbugs\t\t: none\n")
    assert {"avx512_bf16", "avx512f"} <= precision.cpu_flags(str(cpuinfo))
    assert precision.cpu_flags(str(tmp_path / "absent")) == set()


def test_a_bfloat16_backbone_has_the_float32_weights_and_computes_in_bfloat16():
    before = keras.mixed_precision.global_policy().name
    keras.utils.set_random_seed(5)
    f32, _ = backbones.build("efficientnet_b0", 48, "none", compute_dtype="float32")
    keras.utils.set_random_seed(5)
    bf16, _ = backbones.build("efficientnet_b0", 48, "none", compute_dtype="bfloat16")
    assert keras.mixed_precision.global_policy().name == before  # restored
    assert not [v for v in bf16.weights if v.dtype == "bfloat16"]  # variables stay float32 (int64 counters aside)
    assert features_lib.weights_fingerprint(f32) == features_lib.weights_fingerprint(bf16)
    def convolutions(model):
        for layer in model.layers:
            yield from convolutions(layer) if hasattr(layer, "layers") else [layer] if isinstance(
                layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) else []

    assert {c.compute_dtype for c in convolutions(bf16)} == {"bfloat16"}
    assert {c.compute_dtype for c in convolutions(f32)} == {"float32"}
    pixels = np.random.RandomState(0).uniform(0, 255, (4, 48, 48, 3)).astype("float32")
    a, b = f32(pixels, training=False), bf16(pixels, training=False)
    assert b.dtype == "float32" and a.shape == b.shape
    a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
    assert not np.array_equal(a, b)  # it really computed in another precision
    assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()  # bfloat16 keeps about 3 significant digits


def _spec(**overrides) -> TrainSpec:
    base = dict(backbone="efficientnet_b0", weights="none", image_size=48, dense_units=16, dropout=0.2,
                augmentation=False, augmented_views=2, epochs=3, batch_size=16, optimizer="rmsprop",
                learning_rate=1e-3, early_stopping_patience=2, allow_random_weights=True, mixed_precision=False,
                seed=3, name="b0")
    base.update(overrides)
    return TrainSpec(**base)


def _graph_dtypes(model_dir):
    loaded = tf.saved_model.load(str(model_dir))
    graph = loaded.signatures[model_contract.SERVING_DEFAULT].graph.as_graph_def()
    functions = [n for f in graph.library.function for n in f.node_def]
    return {str(a.type) for n in list(graph.node) + functions for a in n.attr.values() if a.HasField("type")}


def test_the_exported_model_computes_in_the_serving_dtype_and_records_both(sample_examples, tmp_path):
    files = {s: [str(sample_examples / f"Split-{s}" / "*.gz")] for s in ("train", "eval", "test")}
    metadata = fit_and_export(_spec(compute_dtype="bfloat16", serving_dtype="float32"), files["train"], files["eval"],
                              str(tmp_path / "f32"), str(tmp_path / "f32run"))
    assert metadata["compute_dtype"]["features"] == "bfloat16" and metadata["compute_dtype"]["served"] == "float32"
    info = json.loads((tmp_path / "f32run" / "features" / features_lib.INFO_FILE).read_text())
    assert info["compute_dtype"] == "bfloat16" and "as configured" in info["compute_dtype_reason"]
    served = fit_and_export(_spec(serving_dtype="bfloat16"), files["train"], files["eval"], str(tmp_path / "bf16"),
                            str(tmp_path / "bf16run"))
    assert served["compute_dtype"]["served"] == "bfloat16"
    assert model_contract.read_metadata(str(tmp_path / "bf16"))["compute_dtype"]["served"] == "bfloat16"
    bf16_type = str(tf.bfloat16.as_datatype_enum)
    assert bf16_type in _graph_dtypes(tmp_path / "bf16") and bf16_type not in _graph_dtypes(tmp_path / "f32")
    test = train_lib.read_examples(files["test"])
    out = tf.saved_model.load(str(tmp_path / "bf16")).signatures[model_contract.SERVING_DEFAULT](
        images=tf.constant(test.images))["probabilities"]
    assert out.dtype == tf.float32 and np.allclose(out.numpy().sum(axis=1), 1.0, atol=1e-3)
    assert dtypes({"backbone": "b", "compute_dtype": served["compute_dtype"]}) == "f32 / bf16"


def test_the_pipeline_passes_both_settings_and_float32_keeps_the_features_parameters(tmp_path, defect_sample):
    sets = [f"data.data_dir={defect_sample}", f"serving.serving_root={tmp_path}"]
    default = pipeline_lib.create_pipeline(load_config(None, sets), str(tmp_path / "a"))
    auto = pipeline_lib.create_pipeline(
        load_config(None, sets + ["training.compute_dtype=auto", "serving.compute_dtype=bfloat16"]), str(tmp_path / "b"))
    node = lambda p, i: next(n for n in p.components if n.id == i)  # noqa: E731
    assert node(default, "Features_efficientnet_b7").exec_properties.get(features_constants.COMPUTE_DTYPE) is None
    assert node(auto, "Features_efficientnet_b7").exec_properties[features_constants.COMPUTE_DTYPE] == "auto"
    spec = json.loads(node(auto, "Trainer_b7_text").exec_properties["spec"])
    assert spec["compute_dtype"] == "auto" and spec["serving_dtype"] == "bfloat16"
    with pytest.raises(ConfigError, match="float32, bfloat16, auto"):
        load_config(None, ["serving.compute_dtype=half"])
