"""SHAP explanations: attribution lands where the model looks, efficiency holds, outputs are complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from placedemarche.components.shap_explainer import explain, report
from placedemarche.pipeline.cli import main
from placedemarche.pipeline.config import MASKERS
from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import model as model_lib

S = 32


def _region_model(pixels: np.ndarray) -> np.ndarray:
    """Class 0's score depends only on the brightness of the top-left quadrant."""
    region = pixels[:, : S // 2, : S // 2, :].mean(axis=(1, 2, 3)) / 255.0
    logits = np.stack([4 * region, np.full_like(region, 2.0), np.zeros_like(region)], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _quadrants(values: np.ndarray) -> list:
    v = values.sum(axis=-1)
    h = S // 2
    return [v[:h, :h].sum(), v[:h, h:].sum(), v[h:, :h].sum(), v[h:, h:].sum()]


@pytest.mark.parametrize("masker", ["inpaint_telea", "blur", "mean"])
def test_the_region_the_model_looks_at_gets_the_largest_attribution(masker):
    picture = np.full((S, S, 3), 60.0)
    picture[: S // 2, : S // 2] = 250  # what raises class 0
    picture[S // 2 :, S // 2 :] = 200  # a distractor the model ignores
    result = explain.Explainer(_region_model, S, ["a", "b", "c"], masker=masker, max_evals=300, top_k=2).explain(picture)
    assert result.classes[0] == 0
    quadrants = np.abs(_quadrants(result.values[..., 0]))
    assert quadrants.argmax() == 0, quadrants
    # Inpainting lets neighbours leak into the masked region, so the others are small, not zero.
    assert quadrants[0] > 2 * quadrants[1:].max(), quadrants


def test_config_and_library_offer_the_same_maskers():
    assert set(MASKERS) == set(explain.MASKERS)
    with pytest.raises(ValueError, match="unknown masker 'pixelate'"):
        explain.masker_spec("pixelate", 32)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """A real exported classifier: EfficientNet-B0 (random weights) at 32 x 32 with a 3-class head."""
    from placedemarche.components.trainer import backbones

    extractor, _ = backbones.build("efficientnet_b0", S, "none", allow_random=True)
    head = model_lib.build_head(int(extractor.output_shape[-1]), 3, 8, 0.0, 0)
    out = tmp_path_factory.mktemp("explain") / "model"
    export_lib.export(export_lib.ImageClassifier(extractor, head, ["a", "b", "c"], S), str(out),
                      {"backbone": "efficientnet_b0", "image_size": S})
    return out


def _picture(sample_examples: Path) -> bytes:
    record = next(iter(tf.data.TFRecordDataset(sorted(map(str, (sample_examples / "Split-test").glob("*.gz"))),
                                               compression_type="GZIP")))
    return tf.train.Example.FromString(record.numpy()).features.feature["image_bytes"].bytes_list.value[0]


def test_pixels_signature_is_the_served_model_after_decoding(small_model, sample_examples):
    image = _picture(sample_examples)
    loaded = tf.saved_model.load(str(small_model))
    served = loaded.signatures["serving_default"](images=tf.constant([image]))["probabilities"].numpy()
    pixels = explain.decode(image, S)
    np.testing.assert_allclose(explain.saved_model_predict(str(small_model))(pixels[None]), served, atol=1e-5)


def test_attributions_sum_to_output_minus_fully_masked_output(small_model, sample_examples):
    """SHAP's efficiency property on a real model, within 1e-4 (float32 model outputs)."""
    predict = explain.saved_model_predict(str(small_model))
    explainer = explain.Explainer(predict, S, ["a", "b", "c"], max_evals=200, batch_size=50, top_k=3)
    result = explainer.explain(explain.decode(_picture(sample_examples), S))
    assert result.values.shape == (S, S, 3, 3)
    np.testing.assert_allclose(result.probabilities, predict(result.pixels[None].astype(np.float32))[0], atol=1e-6)
    # The fully masked picture (inpainting from nothing: SHAP's mean colour) gives the base values.
    masked = np.broadcast_to(result.pixels.reshape(-1, 3).mean(axis=0), result.pixels.shape)[None].astype(np.float32)
    np.testing.assert_allclose(result.base_values, predict(masked)[0][result.classes], atol=1e-5)
    assert result.efficiency_gap().max() < 1e-4, result.efficiency_gap()
    assert explainer.timings.masked_images >= 200 and explainer.timings.model_calls >= 4


def test_explain_command_writes_overlays_values_index_and_html(small_model, sample_examples, tmp_path, capsys):
    paths = []
    for i, name in enumerate(["shoe.jpg", "lamp.png"]):
        pixels = explain.decode(_picture(sample_examples), 64).astype(np.uint8)
        encoded = tf.io.encode_png(pixels) if name.endswith("png") else tf.io.encode_jpeg(pixels)
        (tmp_path / name).write_bytes(encoded.numpy())
        paths.append(str(tmp_path / name))
    out = tmp_path / "out"
    status = main(["-q", "explain", *paths, "--model", str(small_model), "--out", str(out),
                   "--max-evals", "60", "--top-k", "2"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "shoe.jpg: " in printed and str(out / report.HTML_FILE) in printed
    index = json.loads((out / report.INDEX_FILE).read_text())
    assert [i["id"] for i in index["images"]] == ["shoe.jpg", "lamp.png"]
    for entry in index["images"]:
        assert entry["true_label"] is None and entry["predicted_label"] in "abc" and len(entry["top_k"]) == 2
        assert (out / entry["overlay"]).stat().st_size > 0
    values = np.load(out / report.VALUES_FILE)
    assert values["values"].shape == (2, S, S, 3, 2) and values["pixels"].shape == (2, S, S, 3)
    assert "lamp.png" in (out / report.HTML_FILE).read_text()


def test_explain_command_names_what_is_wrong(small_model, tmp_path, capsys):
    assert main(["-q", "explain", str(tmp_path / "missing.jpg"), "--model", str(small_model), "--out", str(tmp_path)]) == 2
    assert "image '" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a picture")
    assert main(["-q", "explain", str(tmp_path / "notes.txt"), "--model", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "holds no saved_model.pb" in capsys.readouterr().err
    assert main(["-q", "explain", str(tmp_path / "notes.txt"), "--model", str(small_model), "--out", str(tmp_path)]) == 2
    assert "notes.txt: not a picture the model can decode" in capsys.readouterr().err
