"""BackboneFeatures' and HeadTrainer's executors, called directly on ``sample_examples``.

EfficientNet-B0 at 32 px with random (seeded) weights; the heads train for a few epochs. The
features are computed once per module and shared, as in the pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from placedemarche.components.backbone_features import constants as bc
from placedemarche.components.backbone_features import executor as features_executor
from placedemarche.components.backbone_features.component import BackboneFeaturesArtifact
from placedemarche.components.trainer import backbones
from placedemarche.components.trainer import constants as tc
from placedemarche.components.trainer import executor as trainer_executor
from placedemarche.components.trainer import features as features_lib
from placedemarche.components.trainer import train as train_lib
from placedemarche.components.trainer.trainer import TrainSpec
from placedemarche.serving import model_contract

REPO = Path(__file__).resolve().parents[1]
TEXT = ["product_name", "description"]
SIZE, SEED, VIEWS = 32, 5, 2
SCHEMA_LABELS = ["Baby Care", "Beauty and Personal Care", "Computers", "Home Decor & Festive Needs",
                 "Home Furnishing", "Kitchen & Dining", "Watches"]


def _feature_properties(**overrides):
    properties = {bc.BACKBONE: "efficientnet_b0", bc.WEIGHTS: "none", bc.IMAGE_SIZE: SIZE, bc.VIEWS: 1, bc.SEED: SEED,
                  bc.ALLOW_RANDOM_WEIGHTS: 0, bc.BATCH_SIZE: 16}
    properties.update(overrides)
    return properties


def _examples(sample_examples: Path):
    examples = standard_artifacts.Examples()
    examples.uri = str(sample_examples)
    return examples


def _compute_features(sample_examples: Path, out: Path, **overrides):
    features = BackboneFeaturesArtifact()
    features.uri = str(out)
    features_executor.Executor().Do({bc.EXAMPLES_KEY: [_examples(sample_examples)]}, {bc.FEATURES_KEY: [features]},
                                    _feature_properties(**overrides))
    return features


def _spec(name: str = "b0_text", **overrides) -> dict:
    spec = TrainSpec(backbone="efficientnet_b0", weights="none", image_size=SIZE, dense_units=16, dropout=0.0,
                     augmentation=False, augmented_views=2, epochs=3, batch_size=16, optimizer="rmsprop",
                     learning_rate=1e-3, early_stopping_patience=3, allow_random_weights=False, mixed_precision=False,
                     seed=SEED, name=name, text_columns=tuple(TEXT), text_min_df=1)
    return dataclasses.asdict(dataclasses.replace(spec, **overrides))


def _schema(out: Path, extra_label: str = ""):
    """ImportSchemaGen's Schema artifact (``schema.pbtxt`` in its uri), from the pipeline's curated schema."""
    schema = io_utils.parse_pbtxt_file(str(REPO / "pipeline" / "schema" / "schema.pbtxt"), schema_pb2.Schema())
    if extra_label:
        next(d for d in schema.string_domain if d.name == "label").value.append(extra_label)
    artifact = standard_artifacts.Schema()
    artifact.uri = str(out)
    os.makedirs(artifact.uri)
    io_utils.write_pbtxt_file(os.path.join(artifact.uri, "schema.pbtxt"), schema)
    return artifact


def _train(sample_examples: Path, out: Path, spec: dict, role: str = "candidate", features=None, schema=None):
    model, model_run = standard_artifacts.Model(), standard_artifacts.ModelRun()
    model.uri, model_run.uri = str(out / "model"), str(out / "model_run")
    inputs = {tc.EXAMPLES_KEY: [_examples(sample_examples)]}
    if features is not None:
        inputs[tc.FEATURES_KEY] = [features]
    if schema is not None:
        inputs[tc.SCHEMA_KEY] = [schema]
    trainer_executor.Executor().Do(inputs, {tc.MODEL_KEY: [model], tc.MODEL_RUN_KEY: [model_run]},
                                   {tc.SPEC: json.dumps(spec, sort_keys=True), tc.ROLE: role})
    return model, model_run


def _eval_accuracy(model_dir: str, sample_examples: Path) -> float:
    """The exported model's accuracy on the eval split, through ``serving_examples``."""
    signature = tf.saved_model.load(model_dir).signatures[model_contract.SERVING_EXAMPLES]
    labels = model_contract.read_labels(model_dir)
    right = total = 0
    files = sorted(str(p) for p in (sample_examples / "Split-eval").glob("*.gz"))
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(64):
        predicted = signature(examples=batch)["label"].numpy()
        truth = tf.io.parse_example(batch, {"label": tf.io.FixedLenFeature([], tf.string)})["label"].numpy()
        right += int(np.sum(predicted == truth))
        total += len(truth)
    assert labels and total
    return right / total


@pytest.fixture(scope="module")
def features(sample_examples, tmp_path_factory):
    """Plain pictures plus one augmented view of each training picture (what an augmenting candidate reads)."""
    return _compute_features(sample_examples, tmp_path_factory.mktemp("features") / "features", **{bc.VIEWS: VIEWS})


@pytest.fixture(scope="module")
def trained_with_features(sample_examples, features, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained_with_features")
    schema = _schema(out / "schema", extra_label="Toys")
    return _train(sample_examples, out, _spec(augmentation=True, augmented_views=VIEWS), features=features, schema=schema)


def test_backbone_features_writes_every_split_and_its_properties(features, sample_examples):
    uri = Path(features.uri)
    info = json.loads((uri / features_lib.INFO_FILE).read_text())
    assert info["backbone"] == "efficientnet_b0" and info["image_size"] == SIZE and info["seed"] == SEED
    assert info["weights"] == "none (random)" and info["views"] == VIEWS and info["dim"] == 1280
    for split in bc.SPLITS:
        ids = train_lib.read_examples([str(sample_examples / f"Split-{split}" / "*.gz")]).ids
        views = VIEWS if split == "train" else 1  # augmented views of the training pictures only
        meta = json.loads((uri / f"{split}.ids.json").read_text())
        x = np.load(uri / f"{split}.npy")
        assert meta == {"ids": ids, "views": views}
        assert x.shape == (views * len(ids), 1280) and x.dtype == np.float32 and np.all(np.isfinite(x))
        assert info["rows"][split] == len(ids) > 0
    train = features_lib.load_split(str(uri), "train")
    assert not np.allclose(train.view(0), train.view(1))  # the second view is augmented
    assert info["timings"]["backbone_passes"] == VIEWS * info["rows"]["train"] + info["rows"]["eval"]
    assert not (uri / "test.npy").exists()  # the test split is never seen before the gate
    assert features.get_string_custom_property(bc.BACKBONE) == "efficientnet_b0"
    assert features.get_string_custom_property("weights") == "none (random)"
    assert features.get_int_custom_property(bc.VIEWS) == VIEWS
    assert features.get_int_custom_property("dim") == 1280
    assert features.get_string_custom_property("weights_fingerprint") == info["weights_fingerprint"]
    assert len(info["weights_fingerprint"]) == 64
    assert features.get_float_custom_property("pictures_per_second") == info["timings"]["pictures_per_second"] > 0
    # The seeded random backbone is the same one the Trainer rebuilds (what the fingerprint stands for).
    rebuilt, _ = features_lib.build_backbone(features_lib.FeatureSpec("efficientnet_b0", "none", SIZE, VIEWS, SEED))
    assert features_lib.weights_fingerprint(rebuilt) == info["weights_fingerprint"]
    assert features_lib.check_weights(str(uri), rebuilt) is None


def test_head_trainer_on_shared_features_with_a_schema(trained_with_features, features, sample_examples):
    model, model_run = trained_with_features
    serving = Path(model.uri) / model_contract.TRAINER_SERVING_SUBDIR
    assert model_contract.serving_dir(model.uri) == str(serving)
    assert (serving / "saved_model.pb").is_file()
    # The classes are the schema's label domain (sorted), "Toys" included though no example has it.
    assert model_contract.read_labels(str(serving)) == sorted(SCHEMA_LABELS + ["Toys"])
    metadata = model_contract.read_metadata(str(serving))
    assert metadata["text_columns"] == TEXT and metadata["backbone"] == "efficientnet_b0"
    assert metadata["recipe"]["name"] == "b0_text" and metadata["weights"] == "none (random)"
    # Both views of every training picture were read from the shared features.
    assert metadata["augmented_views"] == VIEWS and metadata["train_feature_rows"] == VIEWS * metadata["train_examples"]
    assert model.get_string_custom_property("candidate") == "b0_text"
    assert model.get_string_custom_property(tc.ROLE) == "candidate"
    assert model.get_string_custom_property("backbone") == "efficientnet_b0"
    assert model.get_string_custom_property("text_columns") == "product_name,description"
    assert model.get_float_custom_property("val_accuracy") == pytest.approx(metadata["val_accuracy"])
    # val_accuracy is the held-out figure of the train-only classifiers; the exported text classifier
    # was trained again on train + eval, and what it does on eval is recorded as such.
    refit = metadata["text"]["refit"]
    assert refit["examples"] == metadata["train_examples"] + metadata["eval_examples"]
    assert _eval_accuracy(str(serving), sample_examples) == pytest.approx(refit["eval_accuracy_not_held_out"])
    history = json.loads((Path(model_run.uri) / tc.HISTORY_FILE).read_text())
    assert set(history["branches"]) == {"image", "text"}
    assert len(history["history"]["loss"]) == len(history["history"]["val_accuracy"]) == metadata["epochs_run"] <= 3
    assert history["timings"]["feature_source"] == features.uri  # the shared features, not recomputed
    assert not (Path(model_run.uri) / "features").exists()
    assert (Path(model_run.uri) / tc.HISTORY_PLOT).stat().st_size > 0


def test_head_trainer_without_features_computes_the_same_ones(features, sample_examples, tmp_path):
    model, model_run = _train(sample_examples, tmp_path, _spec(name="b0_image", text_columns=()), role="baseline")
    serving = model_contract.serving_dir(model.uri)
    assert model_contract.read_labels(serving) == SCHEMA_LABELS  # no schema: the train split's labels, sorted
    assert model.get_string_custom_property("candidate") == "b0_image"
    assert model.get_string_custom_property(tc.ROLE) == "baseline"
    assert model.get_string_custom_property("text_columns") == ""
    metadata = model_contract.read_metadata(serving)
    assert metadata["text_columns"] == [] and "text" not in metadata
    assert model.get_float_custom_property("val_accuracy") == pytest.approx(metadata["val_accuracy"])
    history = json.loads((Path(model_run.uri) / tc.HISTORY_FILE).read_text())
    assert history["best_epoch"] == metadata["best_epoch"] and len(history["history"]["loss"]) == metadata["epochs_run"]
    assert set(history["branches"]) == {"image"} and "feature_source" not in history["timings"]
    # It computed its own features, and they are those BackboneFeatures computed (same seeded backbone).
    own = Path(model_run.uri) / "features"
    assert features_lib.read_info(str(own)).weights_fingerprint == features.get_string_custom_property("weights_fingerprint")
    for split in bc.SPLITS:
        mine, shared = features_lib.load_split(str(own), split), features_lib.load_split(features.uri, split)
        assert mine.ids == shared.ids and mine.views == 1
        np.testing.assert_allclose(mine.x, shared.view(0), rtol=1e-5, atol=1e-5)  # the plain pictures' features


def test_missing_imagenet_weights_name_the_expected_file(sample_examples, tmp_path, monkeypatch):
    keras_home = tmp_path / "empty-keras-home"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure: no network (simulated)")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", no_network)
    with pytest.raises(backbones.WeightsUnavailable) as raised:
        _compute_features(sample_examples, tmp_path / "features", **{bc.WEIGHTS: "imagenet"})
    message = str(raised.value)
    assert str(keras_home / "models" / "efficientnetb0_notop.h5") in message
    assert "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5" in message
    assert "no network (simulated)" in message and "allow_random_weights" in message
    assert not (tmp_path / "features" / features_lib.INFO_FILE).exists()
