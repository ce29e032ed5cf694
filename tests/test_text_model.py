"""Candidates that read the listing's words: text inside the model, shared features, fusion, parity."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tensorflow as tf

from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import features as features_lib
from placedemarche.components.trainer import fusion as fusion_lib
from placedemarche.components.trainer import text as text_lib
from placedemarche.components.trainer import train as train_lib
from placedemarche.components.trainer.trainer import TrainSpec, fit_and_export
from placedemarche.serving import model_contract

TEXT = ("product_name", "description")


def _spec(**overrides) -> TrainSpec:
    base = dict(
        backbone="efficientnet_b0", weights="none", image_size=48, dense_units=32, dropout=0.2,
        augmentation=False, augmented_views=2, epochs=20, batch_size=16, optimizer="rmsprop",
        learning_rate=1e-3, early_stopping_patience=5, allow_random_weights=False, mixed_precision=False,
        seed=3, name="b0_text", text_columns=TEXT,
    )
    base.update(overrides)
    return TrainSpec(**base)


def _files(sample_examples, split):
    return [str(sample_examples / f"Split-{split}" / "*.gz")]


@pytest.fixture(scope="module")
def shared(sample_examples, tmp_path_factory):
    """One BackboneFeatures computation, and two models trained on it (image only, image + text)."""
    root = tmp_path_factory.mktemp("text_models")
    spec = _spec()
    pictures = {s: features_lib.read_pictures(_files(sample_examples, s)) for s in ("train", "eval")}
    info = features_lib.compute(spec.feature_spec(), pictures, str(root / "features"))
    models = {}
    for name, columns in (("image", ()), ("text", TEXT)):
        start = time.perf_counter()
        metadata = fit_and_export(_spec(name=name, text_columns=columns), _files(sample_examples, "train"),
                                  _files(sample_examples, "eval"), str(root / name / "model"), str(root / name / "run"),
                                  features_dir=str(root / "features"))
        models[name] = (root / name / "model", metadata, time.perf_counter() - start)
    return root, info, models


def test_words_only_in_eval_or_test_texts_have_no_entry(sample_examples):
    settings = text_lib.TextSettings(min_df=1)
    train = train_lib.read_examples(_files(sample_examples, "train"), TEXT).text(TEXT)
    held_out = train_lib.read_examples(_files(sample_examples, "eval"), TEXT).text(TEXT) + \
        train_lib.read_examples(_files(sample_examples, "test"), TEXT).text(TEXT)
    vocabulary = text_lib.fit_vocabulary(train, settings)
    featurizer = text_lib.TextFeaturizer(vocabulary, settings)

    def words(texts):
        return {t.decode() for row in text_lib.tokens(tf.constant(texts), settings).to_list() for t in row
                if t.startswith(b"w:") and b" " not in t}

    unseen = sorted(words(held_out) - words(train))
    assert unseen, "the generated catalogue's held-out texts have words the train split lacks"
    assert not any(text_lib.vocabulary_entries(featurizer, unseen))
    seen = sorted(words(train))[:20]
    assert all(text_lib.vocabulary_entries(featurizer, seen))
    # Nor any other token made from held-out texts alone (character n-grams included).
    train_tokens = {t for row in text_lib.tokens(tf.constant(train), settings).to_list() for t in row}
    held_tokens = {t for row in text_lib.tokens(tf.constant(held_out), settings).to_list() for t in row}
    only_held = sorted(t.decode() for t in held_tokens - train_tokens)
    assert only_held and not any(text_lib.vocabulary_entries(featurizer, only_held))


@pytest.mark.parametrize("text", [
    b"", b"   ", b"!!! ... ??? --- ///", "\u2764\ufe0f\u2728".encode(), b"\xff\xfe\xc3 not utf-8 \x80",
    ("Bedsheet " * 120_000).encode(),  # about 1 MB
])
def test_any_text_gets_a_defined_vector(text):
    settings = text_lib.TextSettings(min_df=1)
    featurizer = text_lib.TextFeaturizer(text_lib.fit_vocabulary(["cotton bedsheet", "analog watch"], settings), settings)
    start = time.perf_counter()
    vector = featurizer(tf.constant([text])).numpy()
    assert time.perf_counter() - start < 10
    assert vector.shape == (1, featurizer.size) and np.all(np.isfinite(vector))
    norm = float(np.linalg.norm(vector))
    assert norm == pytest.approx(1.0, abs=1e-5) or norm == 0.0
    if text.startswith(b"Bedsheet"):  # only the first MAX_TEXT_BYTES are read, and they are known words
        assert norm == pytest.approx(1.0, abs=1e-5)


def test_fusion_weights_are_chosen_by_eval_log_loss():
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 4, 200)
    truth = np.eye(4)[labels]
    text = 0.7 * truth + 0.3 * rng.dirichlet(np.ones(4), 200)  # a good text classifier
    image = 0.25 * truth + 0.75 * rng.dirichlet(np.ones(4), 200)  # a weak image one
    has_text = np.ones(200, bool)
    has_text[:20] = False
    fusion = fusion_lib.fit(image, text, has_text, labels)
    assert fusion.text_weight > fusion.image_weight
    fused = fusion_lib.fuse_numpy(image, text, has_text, fusion.image_weight, fusion.text_weight)
    np.testing.assert_allclose(fused[:20], image[:20])  # no text: the image's answer, exactly
    np.testing.assert_allclose(fused.sum(axis=1), 1.0, atol=1e-6)
    for wi in fusion_lib.IMAGE_WEIGHTS:  # no grid point has a lower eval log loss
        for wt in fusion_lib.TEXT_WEIGHTS:
            p = fusion_lib.fuse_numpy(image, text, has_text, wi, wt)
            assert -np.mean(np.log(p[np.arange(200), labels] + 1e-7)) >= fusion.eval_log_loss - 1e-9
    with pytest.raises(ValueError, match="no eval examples"):
        fusion_lib.fit(image[:0], text[:0], has_text[:0], labels[:0])


def test_candidates_share_one_features_computation(shared):
    root, info, models = shared
    for name in ("image", "text"):
        _, metadata, _ = models[name]
        assert metadata["train_feature_rows"] == info.rows["train"]
    saved = json.loads((root / "text" / "run" / "history.json").read_text())
    assert saved["timings"]["feature_source"] == str(root / "features")  # read, not recomputed
    assert not (root / "text" / "run" / "features").exists()


def test_text_candidate_reads_words_and_beats_its_image_branch(shared):
    _, _, models = shared
    _, metadata, _ = models["text"]
    branches = metadata["branch_val_accuracy"]
    assert metadata["text_columns"] == list(TEXT)
    assert metadata["val_accuracy"] >= branches["image"] + 0.2
    assert metadata["text"]["vocabulary_size"] > 100
    assert set(metadata["fusion"]) >= {"image_weight", "text_weight", "eval_log_loss"}


def test_export_matches_memory_for_picture_and_text_and_blank_text_is_the_image_answer(shared, sample_examples, tmp_path):
    root, _, models = shared
    examples = train_lib.read_examples(_files(sample_examples, "test"), TEXT)
    images, texts = examples.images[:6], examples.text(TEXT)[:6]
    model = tf.saved_model.load(str(models["text"][0]))
    signatures = model.signatures
    assert set(signatures) == {model_contract.SERVING_DEFAULT, model_contract.SERVING_EXAMPLES,
                               model_contract.SERVING_PIXELS, model_contract.SERVING_IMAGE_BRANCH,
                               model_contract.SERVING_FUSION}
    served = signatures["serving_default"](images=tf.constant(images), text=tf.constant(texts))["probabilities"].numpy()
    # The same examples through serving_examples (what TFMA and infra validation use).
    records = [tf.train.Example(features=tf.train.Features(feature={
        "image_bytes": tf.train.Feature(bytes_list=tf.train.BytesList(value=[img])),
        **{c: tf.train.Feature(bytes_list=tf.train.BytesList(value=[examples.texts[c][i].encode()]))
           for c in TEXT if examples.texts[c][i]}})).SerializeToString() for i, img in enumerate(images)]
    by_examples = signatures["serving_examples"](examples=tf.constant(records))["probabilities"].numpy()
    np.testing.assert_allclose(by_examples, served, atol=1e-5)
    # serving_pixels on the model's own decoding gives the same answer (what SHAP perturbs).
    from placedemarche.components.trainer import model as model_lib

    decoded = model_lib.decode_batch(tf.constant(images), 48)
    by_pixels = signatures["serving_pixels"](pixels=decoded, text=tf.constant(texts))["probabilities"].numpy()
    np.testing.assert_allclose(by_pixels, served, atol=1e-5)
    # Blank text (empty, punctuation only, or left out): exactly the image branch's answer.
    image_only = signatures["serving_default"](images=tf.constant(images), text=tf.constant([""]))["probabilities"].numpy()
    branch = signatures["serving_image_branch"](pixels=decoded)["probabilities"].numpy()
    np.testing.assert_allclose(image_only, branch, atol=1e-7)
    punctuation = signatures["serving_default"](images=tf.constant(images),
                                                text=tf.constant(["?!..."] * 6))["probabilities"].numpy()
    np.testing.assert_allclose(punctuation, image_only, atol=1e-7)
    image_model = tf.saved_model.load(str(models["image"][0])).signatures["serving_default"]
    np.testing.assert_allclose(image_only, image_model(images=tf.constant(images))["probabilities"].numpy(), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one string per picture"):
        signatures["serving_default"](images=tf.constant(images), text=tf.constant(texts[:2]))


def test_in_memory_classifier_and_savedmodel_agree(shared, sample_examples, tmp_path):
    """The Classifier object the Trainer builds and its exported SavedModel agree within 1e-5."""
    from placedemarche.components.trainer import model as model_lib

    settings = text_lib.TextSettings(min_df=1)
    train = train_lib.read_examples(_files(sample_examples, "train"), TEXT)
    featurizer = text_lib.TextFeaturizer(text_lib.fit_vocabulary(train.text(TEXT), settings), settings)
    extractor, _ = features_lib.build_backbone(_spec().feature_spec())
    head = model_lib.build_head(int(extractor.output_shape[-1]), 7, 8, 0.1, 0)
    text_head = model_lib.build_text_head(featurizer.size, 7, 0.0, 0)
    classifier = export_lib.Classifier([str(i) for i in range(7)], 48, extractor=extractor, image_head=head,
                                       featurizer=featurizer, text_head=text_head,
                                       fusion=fusion_lib.Fusion(0.3, 1.5), text_columns=TEXT)
    images, texts = train.images[:4], train.text(TEXT)[:4]
    expected = classifier.classify_images(tf.constant(images), texts)["probabilities"].numpy()
    export_lib.export(classifier, str(tmp_path / "m"), {"backbone": "efficientnet_b0"})
    reloaded = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"](
        images=tf.constant(images), text=tf.constant(texts))
    np.testing.assert_allclose(reloaded["probabilities"].numpy(), expected, atol=1e-5)
    assert model_contract.signature_defaults(str(tmp_path / "m"))["serving_default"]["text"].tolist() == [b""]


def test_features_computed_with_other_weights_are_refused(shared, sample_examples, tmp_path):
    root, _, _ = shared
    with pytest.raises(ValueError, match="differs from the one the features .* were computed with"):
        fit_and_export(_spec(seed=4), _files(sample_examples, "train"), _files(sample_examples, "eval"),
                       str(tmp_path / "model"), str(tmp_path / "run"), features_dir=str(root / "features"))


def test_text_only_candidate_needs_no_backbone(sample_examples, tmp_path):
    metadata = fit_and_export(_spec(backbone="none", name="words"), _files(sample_examples, "train"),
                              _files(sample_examples, "eval"), str(tmp_path / "model"), str(tmp_path / "run"))
    assert metadata["val_accuracy"] >= 0.5 and "fusion" not in metadata
    signature = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"text"}
    out = signature(text=tf.constant(["analog wrist watch with leather strap", ""]))
    assert out["probabilities"].shape == (2, 7)


def test_text_candidate_reuses_the_image_head_its_backbone_twin_trained(shared, sample_examples):
    """b7_text's image head is b7_image's (same recipe, same shared features): trained once per process,
    and what is reused is exactly what training again gives."""
    from placedemarche.components.trainer import trainer as trainer_lib

    root, _, models = shared
    _, metadata, _ = models["text"]
    assert metadata["image_head_reused_from"] == "image" and "image_head_reused_from" not in models["image"][1]
    history = json.loads((root / "text" / "run" / "history.json").read_text())
    text_branch = history["branches"]["text"]  # this Trainer's head time is its text classifier's alone
    assert history["timings"]["head_seconds"] == pytest.approx(
        text_branch["seconds_per_epoch"] * len(text_branch["history"]["loss"]))
    spec = _spec(name="again")
    data = trainer_lib.read_training_data(spec, _files(sample_examples, "train"), _files(sample_examples, "eval"))
    trainer_lib.load_features(spec, data, str(root / "features"))
    reused = trainer_lib.fit_classifiers(spec, data, quiet=True)
    assert reused.image.extra == {"reused_from": "image"}
    saved = dict(trainer_lib._IMAGE_HEADS)
    trainer_lib._IMAGE_HEADS.clear()
    try:
        trained = trainer_lib.fit_classifiers(spec, data, quiet=True)
        assert "reused_from" not in trained.image.extra
        for a, b in zip(reused.image.result.head.get_weights(), trained.image.result.head.get_weights()):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(reused.image.eval_probabilities, trained.image.eval_probabilities)
        other = trainer_lib.fit_classifiers(_spec(name="other", dropout=0.3), data, quiet=True)  # another recipe
        assert "reused_from" not in other.image.extra
    finally:
        trainer_lib._IMAGE_HEADS.clear()
        trainer_lib._IMAGE_HEADS.update(saved)


def _text_data(train, evaluation):
    """A text-only TrainingData from ``[(text, label), ...]`` pairs."""
    from placedemarche.components.trainer import trainer as trainer_lib

    def examples(rows):
        return train_lib.Examples([f"id{i}" for i in range(len(rows))], [l for _, l in rows], [b""] * len(rows),
                                  {"product_name": [t for t, _ in rows]})

    labels = sorted({l for _, l in train})
    return trainer_lib.TrainingData(labels, examples(train), examples(evaluation),
                                    train_lib.one_hot([l for _, l in train], labels),
                                    train_lib.one_hot([l for _, l in evaluation], labels),
                                    texts=text_lib.TextFeatures([t for t, _ in train], [t for t, _ in evaluation]))


def test_exported_text_classifier_is_trained_again_on_train_and_eval():
    """Early stopping on eval picks the epochs; the exported text classifier then learns from eval's
    labels too (here: 'zebra lamp' is Home twice in train and Watch twelve times in eval), with the
    train split's vocabulary; the eval figures stay the held-out, train-only classifier's."""
    from placedemarche.components.trainer import trainer as trainer_lib

    train = ([("cotton bedsheet", "Home")] * 10 + [("analog watch", "Watch")] * 10 + [("zebra lamp", "Home")] * 2)
    evaluation = ([("cotton bedsheet", "Home")] * 10 + [("analog watch", "Watch")] * 10
                  + [("zebra lamp", "Watch")] * 12 + [("zebra strap", "Watch")])
    spec = _spec(backbone="none", text_columns=("product_name",), text_min_df=2, learning_rate=1e-3, epochs=40,
                 early_stopping_patience=3, text_dropout=0.0, batch_size=8)
    answers = {}
    for refit in (False, True):
        fitted = trainer_lib.fit_classifiers(spec, _text_data(train, evaluation), quiet=True, refit_text=refit)
        answers[refit] = fitted.labels[int(fitted.predict(None, ["zebra lamp"]).argmax())]
        if refit:
            assert fitted.text.extra["refit"]["epochs"] == fitted.text.result.best_epoch >= 1
            assert fitted.text.extra["refit"]["examples"] == len(train) + len(evaluation)
            assert fitted.val_accuracy == pytest.approx(held_out)  # the train-only classifier's eval figure
            # 'strap' is in eval only: still no entry after the refit (the vocabulary is the train split's).
            assert not any(text_lib.vocabulary_entries(fitted.featurizer, ["w:strap"]))
        held_out = fitted.val_accuracy
    assert answers == {False: "Home", True: "Watch"}
    # A spec with text_refit off exports the train-only classifier even when asked to refit.
    fitted = trainer_lib.fit_classifiers(TrainSpec(**{**spec.__dict__, "text_refit": False}), _text_data(train, evaluation),
                                         quiet=True, refit_text=True)
    assert "refit" not in fitted.text.extra
    assert fitted.labels[int(fitted.predict(None, ["zebra lamp"]).argmax())] == "Home"


def test_fast_training_without_eval_runs_every_epoch():
    import keras

    from placedemarche.components.trainer import model as model_lib

    x = np.random.RandomState(0).rand(40, 6).astype("float32")
    y = train_lib.one_hot(["a" if v > 0.5 else "b" for v in x[:, 0]], ["a", "b"])
    head = model_lib.build_text_head(6, 2, 0.0, 1)
    result = train_lib.train_head_fast(head, x, y, None, None, 7, 8, "rmsprop", 1e-2, 2, 1)
    assert set(result.history) == {"loss", "accuracy"} and len(result.history["loss"]) == 7 == result.best_epoch
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert isinstance(head, keras.Model)
