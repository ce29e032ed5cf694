"""Tuning the heads on cached features: the search, the Tuner's executor, the Trainer's use of its values, the graph."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from tfx.types import standard_artifacts

from placedemarche.components.backbone_features import constants as features_constants
from placedemarche.components.trainer import constants as trainer_constants
from placedemarche.components.trainer import features as features_lib
from placedemarche.components.trainer import train as train_lib
from placedemarche.components.trainer import trainer as trainer_lib
from placedemarche.components.trainer.executor import Executor as TrainerExecutor
from placedemarche.components.trainer.trainer import TrainSpec
from placedemarche.components.tuner import constants as c
from placedemarche.components.tuner import search
from placedemarche.components.trainer import space as space_lib
from placedemarche.components.tuner.executor import Executor as TunerExecutor
from placedemarche.pipeline import kubeflow
from placedemarche.pipeline import pipeline as pipeline_lib
from placedemarche.pipeline.config import ConfigError, load_config
from placedemarche.pipeline.review.rendering import tuning_lines
from placedemarche.serving import model_contract

TEXT = ("product_name", "description")
DIM = 24


def _spec(**overrides) -> TrainSpec:
    base = dict(
        backbone="efficientnet_b0", weights="none", image_size=48, dense_units=32, dropout=0.2,
        augmentation=False, augmented_views=2, epochs=8, batch_size=16, optimizer="rmsprop",
        learning_rate=1e-3, early_stopping_patience=2, allow_random_weights=True, mixed_precision=False,
        seed=3, name="b0_image", text_min_df=1,
    )
    base.update(overrides)
    return TrainSpec(**base)


def _files(examples: Path, split: str):
    return [str(examples / f"Split-{split}" / "*.gz")]


def _fake_features(examples: Path, out: Path, splits=("train", "eval")) -> Path:
    """A features artifact like BackboneFeatures writes, of made-up vectors that carry the label (no backbone run)."""
    rng = np.random.RandomState(0)
    labels = sorted(set(train_lib.read_examples(_files(examples, "train")).labels))
    for split in splits:
        ex = train_lib.read_examples(_files(examples, split))
        x = rng.normal(0, 1, (len(ex.ids), DIM)).astype(np.float32)
        for i, label in enumerate(ex.labels):
            x[i, labels.index(label)] += 1.5
        features_lib.save_split(str(out), split, features_lib.SplitFeatures(x, ex.ids, 1))
    info = features_lib.FeatureInfo("efficientnet_b0", 48, 1, 3, "random", "fake", DIM)
    (out / features_lib.INFO_FILE).write_text(json.dumps(asdict(info)))
    return out


@pytest.fixture(scope="module")
def fake_features(sample_examples, tmp_path_factory) -> Path:
    return _fake_features(sample_examples, tmp_path_factory.mktemp("fake_features"))


def _image_data(sample_examples, fake_features, spec):
    data = trainer_lib.read_training_data(spec, _files(sample_examples, "train"), _files(sample_examples, "eval"))
    trainer_lib.load_features(spec, data, str(fake_features))
    return data


@pytest.mark.parametrize("algorithm", ["random", "bayesian", "hyperband"])
def test_the_same_seed_gives_the_same_best_values_and_another_seed_other_trials(algorithm, sample_examples, fake_features):
    spec = _spec()
    data = _image_data(sample_examples, fake_features, spec)
    first = search.tune(spec, data, search.TuningSettings(max_trials=4, algorithm=algorithm, seed=5))
    again = search.tune(spec, data, search.TuningSettings(max_trials=4, algorithm=algorithm, seed=5))
    other = search.tune(spec, data, search.TuningSettings(max_trials=4, algorithm=algorithm, seed=6))
    assert first.best_values == again.best_values
    assert [t.values for t in first.trials] == [t.values for t in again.trials]
    assert [t.val_accuracy for t in first.trials] == [t.val_accuracy for t in again.trials]
    assert [t.values for t in first.trials] != [t.values for t in other.trials]
    # The configured recipe is scored first; the best is never worse on eval than it.
    assert first.default.values == space_lib.defaults(spec)
    assert first.best.val_accuracy >= first.default.val_accuracy
    ranked = sorted([first.default] + first.trials, key=lambda t: t.rank_key)
    assert first.best_trial == ranked[0].trial_id
    # Every trial's values are in the search space and name the candidate's own settings.
    space = space_lib.search_space(spec)
    for trial in first.trials:
        assert set(trial.values) == {"dense_units", "dropout", "learning_rate", "optimizer"}, trial
        assert trial.values["dense_units"] in space.get_config()["space"][0]["config"]["values"]
        assert 0.0 <= trial.values["dropout"] <= 0.6 and 1e-4 <= trial.values["learning_rate"] <= 1e-2


@pytest.mark.parametrize("algorithm", ["bayesian", "hyperband"])
def test_every_algorithm_searches_and_hyperband_gives_trials_an_epoch_budget(algorithm, sample_examples, fake_features):
    spec = _spec(epochs=6)
    data = _image_data(sample_examples, fake_features, spec)
    result = search.tune(spec, data, search.TuningSettings(max_trials=3, algorithm=algorithm, seed=1))
    searched = [t for t in result.trials if not t.trial_id.startswith("final-")]
    assert len(searched) == 3 and all(t.status == "COMPLETED" for t in result.trials)
    if algorithm == "hyperband":
        assert all(t.epochs is not None and t.epochs_run <= t.epochs < spec.epochs for t in searched)
        # Reduced-budget scores do not choose: the best values were trained again at the full epochs.
        finals = [t for t in result.trials if t.trial_id.startswith("final-")]
        assert finals and all(t.epochs is None for t in finals)
        assert result.best_trial in [search.DEFAULT_TRIAL] + [t.trial_id for t in finals]
    else:
        assert all(t.epochs is None for t in result.trials)


def test_failed_trials_are_recorded_and_the_search_goes_on(sample_examples, fake_features, monkeypatch):
    spec = _spec()
    data = _image_data(sample_examples, fake_features, spec)
    real = search.fit_classifiers

    def failing(trial_spec, *args, **kwargs):
        if trial_spec != spec:  # every proposed value fails; the configured recipe trains
            raise ValueError("no token appears in at least 99 train texts")
        return real(trial_spec, *args, **kwargs)

    monkeypatch.setattr(search, "fit_classifiers", failing)
    result = search.tune(spec, data, search.TuningSettings(max_trials=5, seed=3))
    assert [t.status for t in result.trials] == ["FAILED"] * 5  # KerasTuner alone would stop after 3
    assert all("99 train texts" in t.error for t in result.trials)
    assert result.best_trial == search.DEFAULT_TRIAL and result.best_values == space_lib.defaults(spec)


def test_an_untrained_head_is_not_tuned(sample_examples, fake_features):
    spec = _spec(epochs=0)
    result = search.tune(spec, _image_data(sample_examples, fake_features, spec), search.TuningSettings(max_trials=5))
    assert result.trials == [] and result.best_values == space_lib.defaults(spec)


def test_a_kind_of_ngram_the_candidate_reads_none_of_stays_off():
    words_only = space_lib.search_space(_spec(text_columns=TEXT, text_char_ngrams=(0, 0))).values
    assert "text_char_ngrams" not in words_only and "text_max_chars" not in words_only
    chars_only = space_lib.search_space(_spec(text_columns=TEXT, text_word_ngrams=(0, 0)))
    assert "text_word_ngrams" not in chars_only.values
    char_choices = next(h for h in chars_only.space if h.name == "text_char_ngrams").values
    assert "0-0" not in char_choices  # switching chars off too would leave no text


def test_a_fitted_models_predictions_on_its_eval_rows_are_its_eval_probabilities(sample_examples, fake_features):
    """``Fitted.predict`` (used for the default-vs-tuned test accuracy) answers as training scored it, fusion included."""
    spec = _spec(text_columns=TEXT, name="b0_text")
    data = _image_data(sample_examples, fake_features, spec)
    fitted = trainer_lib.fit_classifiers(spec, data, None, quiet=True)
    assert fitted.fusion is not None
    again = fitted.predict(data.eval_x, data.evaluation.text(TEXT))
    assert np.allclose(again, fitted.eval_probabilities, atol=1e-5)


def test_text_settings_are_searched_and_rows_come_from_one_count_per_ngram_range(sample_examples):
    spec = _spec(backbone="none", name="words", text_columns=TEXT)
    data = trainer_lib.read_training_data(spec, _files(sample_examples, "train"), _files(sample_examples, "eval"))
    result = search.tune(spec, data, search.TuningSettings(max_trials=4, seed=2))
    assert {"text_max_words", "text_word_ngrams", "text_char_ngrams", "text_max_chars", "learning_rate",
            "optimizer"} == set(result.defaults)
    assert "dense_units" not in result.defaults  # a text-only candidate has no image head
    # A vocabulary cut from the cached counts equals one learnt from scratch.
    settings = space_lib.apply(spec, result.trials[0].values).text_settings()
    cached, _, train_rows, _ = data.texts.get(settings)
    fresh = trainer_lib.text_lib.fit_vocabulary(data.train.text(TEXT), settings)
    assert cached.tokens == fresh.tokens and np.allclose(cached.idf, fresh.idf)
    assert train_rows.shape == (len(data.train.ids), len(fresh))


def test_apply_replaces_the_recipe_and_refuses_values_of_another_candidate():
    spec = _spec(text_columns=TEXT)
    tuned = space_lib.apply(spec, {"dense_units": 512, "dropout": 0.30000000000000004, "text_word_ngrams": "1-3",
                                   "tuner/epochs": 4})
    assert (tuned.dense_units, tuned.dropout, tuned.text_word_ngrams) == (512, 0.3, (1, 3))
    assert tuned.learning_rate == spec.learning_rate and tuned.name == spec.name
    with pytest.raises(ValueError, match="'text_max_words' is not a setting tuned for candidate 'b0_image'"):
        space_lib.apply(_spec(), {"text_max_words": 100})
    with pytest.raises(ValueError, match="not an n-gram range"):
        space_lib.apply(spec, {"text_word_ngrams": "one"})


def _artifact(cls, uri: Path):
    artifact = cls()
    artifact.uri = str(uri)
    uri.mkdir(parents=True, exist_ok=True)
    return artifact


def test_the_tuner_never_reads_the_test_split(sample_examples, fake_features, tmp_path, monkeypatch):
    # A copy of the examples whose test split is garbage: reading it would fail.
    examples = tmp_path / "examples"
    for split in ("train", "eval", "test", "unlabelled"):
        src = sample_examples / f"Split-{split}"
        if src.is_dir():
            (examples / f"Split-{split}").mkdir(parents=True)
            for f in src.iterdir():
                data = b"not a TFRecord" if split == "test" else f.read_bytes()
                (examples / f"Split-{split}" / f.name).write_bytes(data)
    read = []
    original = train_lib.read_examples
    monkeypatch.setattr(train_lib, "read_examples", lambda patterns, *a, **k: read.extend(patterns) or original(patterns, *a, **k))
    best = _artifact(standard_artifacts.HyperParameters, tmp_path / "best")
    results = _artifact(standard_artifacts.TunerResults, tmp_path / "results")
    spec = _spec(text_columns=TEXT, name="b0_text")
    TunerExecutor().Do(
        {c.EXAMPLES_KEY: [_artifact(standard_artifacts.Examples, examples)],
         c.FEATURES_KEY: [_artifact(standard_artifacts.Examples, fake_features)]},
        {c.BEST_HYPERPARAMETERS_KEY: [best], c.TUNER_RESULTS_KEY: [results]},
        {c.SPEC: json.dumps(asdict(spec)), c.TUNING: json.dumps({"max_trials": 3, "algorithm": "random", "seed": 1})})
    assert read and not any("Split-test" in p for p in read)
    assert sorted({Path(p).parent.name for p in read}) == ["Split-eval", "Split-train"]
    # TFX's Tuner's files: KerasTuner's config with the best values, the trials best first; and our report.
    config = json.loads((tmp_path / "best" / c.BEST_HYPERPARAMETERS_FILE).read_text())
    report = json.loads((tmp_path / "results" / c.REPORT_FILE).read_text())
    rows = json.loads((tmp_path / "results" / c.TUNER_RESULTS_FILE).read_text())
    assert config["values"] == report["best_values"] and {s["config"]["name"] for s in config["space"]} == set(report["defaults"])
    assert len(report["trials"]) == 4 and report["trials"][0]["trial_id"] == "default"
    assert rows[0]["trial_id"] == report["best_trial"] and rows[0]["score"] == report["best_val_accuracy"]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    # The test features are not needed either: the fake features artifact has none.
    assert not (fake_features / "test.npy").exists()


def test_the_trainer_trains_the_tuned_values_and_compares_both_recipes(sample_examples, tmp_path):
    """Tuner → best_hyperparameters → Trainer, through both executors (a text-only candidate: no backbone)."""
    spec = _spec(backbone="none", name="words", text_columns=TEXT, epochs=6)
    examples = _artifact(standard_artifacts.Examples, sample_examples)
    best = _artifact(standard_artifacts.HyperParameters, tmp_path / "best")
    TunerExecutor().Do(
        {c.EXAMPLES_KEY: [examples]},
        {c.BEST_HYPERPARAMETERS_KEY: [best], c.TUNER_RESULTS_KEY: [_artifact(standard_artifacts.TunerResults, tmp_path / "r")]},
        {c.SPEC: json.dumps(asdict(spec)), c.TUNING: json.dumps({"max_trials": 3, "seed": 4})})
    # Make sure the Trainer has something to apply: the best values with two of them changed for certain.
    config = json.loads((tmp_path / "best" / c.BEST_HYPERPARAMETERS_FILE).read_text())
    config["values"].update(text_word_ngrams="1-1", text_max_words=5000)
    (tmp_path / "best" / c.BEST_HYPERPARAMETERS_FILE).write_text(json.dumps(config))
    model = _artifact(standard_artifacts.Model, tmp_path / "model")
    TrainerExecutor().Do(
        {trainer_constants.EXAMPLES_KEY: [examples], trainer_constants.HYPERPARAMETERS_KEY: [best]},
        {trainer_constants.MODEL_KEY: [model], trainer_constants.MODEL_RUN_KEY: [_artifact(standard_artifacts.ModelRun, tmp_path / "run")]},
        {trainer_constants.SPEC: json.dumps(asdict(spec)), trainer_constants.ROLE: "candidate"})
    metadata = model_contract.read_metadata(model_contract.serving_dir(model.uri))
    assert metadata["recipe"]["text_word_ngrams"] == [1, 1] and metadata["recipe"]["text_max_words"] == 5000
    tuning = metadata["tuning"]
    assert {"text_max_words", "text_word_ngrams"} <= set(tuning["changed"])
    assert tuning["values"]["text_word_ngrams"] == {"default": "1-2", "tuned": "1-1"}
    assert tuning["tuned"]["val_accuracy"] == pytest.approx(metadata["val_accuracy"])
    n_test = len(train_lib.read_examples(_files(sample_examples, "test")).ids)
    assert tuning["test_examples"] == n_test > 0
    for recipe in ("default", "tuned"):
        assert 0.0 <= tuning[recipe]["test_accuracy"] <= 1.0 and 0.0 <= tuning[recipe]["val_accuracy"] <= 1.0
    # The comparison's test accuracy of the tuned recipe is the exported model's own on the test split.
    import tensorflow as tf

    test = train_lib.read_examples(_files(sample_examples, "test"), TEXT)
    served = tf.saved_model.load(model_contract.serving_dir(model.uri)).signatures[model_contract.SERVING_DEFAULT]
    labels = model_contract.read_labels(model_contract.serving_dir(model.uri))
    probabilities = served(text=tf.constant(test.text(TEXT)))["probabilities"]  # a text-only model reads no picture
    exported = float(np.mean(np.array(labels)[probabilities.numpy().argmax(axis=1)] == np.array(test.labels)))
    assert tuning["tuned"]["test_accuracy"] == pytest.approx(exported)
    assert model.get_string_custom_property("tuned") == ",".join(tuning["changed"])
    text = "\n".join(tuning_lines(tuning))
    assert "* text_word_ngrams" in text and "default 1-2" in text and "tuned 1-1" in text and "test accuracy default" in text


def _node(pipeline, node_id):
    return next(n for n in pipeline.components if n.id == node_id)


def test_with_tuning_off_the_graph_and_every_node_parameter_are_as_before(tmp_path, defect_sample):
    config = load_config(None, [f"data.data_dir={defect_sample}", f"serving.serving_root={tmp_path}"])
    assert config.tuning.enabled is False  # the default
    pipeline = pipeline_lib.create_pipeline(config, str(tmp_path / "root"))
    ids = [n.id for n in pipeline.components]
    assert not [i for i in ids if i.startswith(("Tuner_", "TestFeatures_"))]
    assert sorted(ids) == sorted(pipeline_lib.node_ids(config))
    for node_id in pipeline_lib.feature_groups(config):
        assert _node(pipeline, node_id).exec_properties.get(features_constants.SPLITS_PARAM) is None
        assert _node(pipeline, node_id).exec_properties.get(features_constants.COMPUTE_DTYPE) is None
    for name in ("b7_image", "b7_text"):
        trainer = _node(pipeline, pipeline_lib.trainer_id(name))
        assert trainer_constants.HYPERPARAMETERS_KEY not in trainer.inputs
        # The Trainer's parameters are exactly what they were: the recipe as configured.
        assert json.loads(trainer.exec_properties[trainer_constants.SPEC]) == json.loads(json.dumps(
            pipeline_lib.train_spec(config, config.candidate(name), name)))


def test_with_tuning_on_each_candidate_gets_a_tuner_before_its_trainer_and_kubeflow_compiles_it(tmp_path, defect_sample):
    config = load_config(None, [f"data.data_dir={defect_sample}", f"serving.serving_root={tmp_path}", "tuning.enabled=true",
                                "tuning.algorithm=bayesian", "tuning.max_trials=7"])
    pipeline = pipeline_lib.create_pipeline(config, str(tmp_path / "root"))
    for name in ("b7_image", "b7_text"):
        tuner = _node(pipeline, pipeline_lib.tuner_id(name))
        trainer = _node(pipeline, pipeline_lib.trainer_id(name))
        assert trainer.inputs[trainer_constants.HYPERPARAMETERS_KEY].producer_component_id == tuner.id
        assert tuner.inputs[c.FEATURES_KEY].producer_component_id == "Features_efficientnet_b7"
        assert json.loads(tuner.exec_properties[c.TUNING]) == {"algorithm": "bayesian", "max_trials": 7, "seed": 42}
        assert json.loads(tuner.exec_properties[c.SPEC]) == json.loads(trainer.exec_properties[trainer_constants.SPEC])
        # The test pictures' features come from a node of their own, read by the Trainer only.
        assert trainer.inputs[trainer_constants.TEST_FEATURES_KEY].producer_component_id == "TestFeatures_efficientnet_b7"
        assert not [k for k, ch in tuner.inputs.items() if ch.producer_component_id.startswith("TestFeatures_")]
    # The baseline is not tuned; the train / eval features node keeps its parameters (and its cache).
    baseline = _node(pipeline, pipeline_lib.BASELINE_TRAINER)
    assert trainer_constants.HYPERPARAMETERS_KEY not in baseline.inputs and trainer_constants.TEST_FEATURES_KEY not in baseline.inputs
    assert _node(pipeline, "TestFeatures_efficientnet_b7").exec_properties[features_constants.SPLITS_PARAM] == "test"
    assert _node(pipeline, "Features_efficientnet_b7").exec_properties.get(features_constants.SPLITS_PARAM) is None
    assert "TestFeatures_vgg19_2views" not in [n.id for n in pipeline.components]
    assert sorted(n.id for n in pipeline.components) == sorted(pipeline_lib.node_ids(config))
    compiled = kubeflow.compile_pipeline(config.replace(**{"runner.pipeline_root": "gs://b/p"}), str(tmp_path / "kfp.yaml"))
    tasks = compiled["pipeline_spec"]["root"]["dag"]["tasks"]
    assert {"Tuner_b7_image", "Tuner_b7_text", "TestFeatures_efficientnet_b7"} <= set(tasks)
    assert "Tuner_b7_text" in tasks["Trainer_b7_text"].get("dependentTasks", [])
    executors = compiled["pipeline_spec"]["deploymentSpec"]["executors"]
    assert "accelerator" in executors["TestFeatures_efficientnet_b7_executor"]["container"]["resources"]  # a backbone step
    assert "resources" not in executors["Tuner_b7_text_executor"]["container"]  # heads only: CPU


@pytest.mark.parametrize("setting, message", [
    ("tuning.algorithm=grid", "random, bayesian, hyperband"),
    ("tuning.max_trials=0", "max_trials"),
])
def test_bad_tuning_settings_are_refused(setting, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [setting])
