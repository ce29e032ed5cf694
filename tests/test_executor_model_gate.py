"""CandidateEvaluator and ModelGate executors on REAL TFMA results of tiny exported models.

Three models are exported once per module: ``good`` (a text classifier: nearest centroid of the
train split's TF-IDF vectors), ``constant`` (always "Baby Care") and the baseline (always
"Computers"). The CandidateEvaluator executor runs TFMA over the test split of ``sample_examples``
once; each test then runs ModelGate's executor for one candidate with its own thresholds, and checks
``comparison.json`` against predictions computed here, independently, with the SavedModels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Tuple

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats as scipy_stats
from sklearn import metrics as sk_metrics
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from placedemarche.components.candidate_evaluator import constants as evaluator_constants
from placedemarche.components.candidate_evaluator import executor as evaluator_executor
from placedemarche.components.model_gate import executor as gate_executor
from placedemarche.components.model_gate import tfma_eval
from placedemarche.components.model_gate.component import ModelComparison
from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import model as model_lib
from placedemarche.components.trainer import text as text_lib
from placedemarche.components.trainer import train as train_lib
from placedemarche.serving import model_contract

LABELS = ["Baby Care", "Beauty and Personal Care", "Computers", "Home Decor & Festive Needs", "Home Furnishing",
          "Kitchen & Dining", "Watches"]
TEXT = ("product_name", "description")
# The thresholds TFMA ran with (the Evaluator's part of the gate).
TFMA_MIN_ACCURACY, TFMA_MIN_IMPROVEMENT = 0.3, 0.05
CANDIDATES = ("good", "constant")


def _tiny_image_classifier(labels, constant_class: int) -> export_lib.Classifier:
    """Mean colour → a softmax that ignores it: always ``labels[constant_class]``."""
    extractor = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D()])
    head = keras.Sequential([keras.Input((3,)), keras.layers.Dense(len(labels), activation="softmax")])
    bias = np.zeros(len(labels), np.float32)
    bias[constant_class] = 5.0
    head.layers[-1].set_weights([np.zeros((3, len(labels)), np.float32), bias])
    return export_lib.ImageClassifier(extractor, head, labels, 16)


def _text_classifier(train_files, forgotten=()) -> export_lib.Classifier:
    """A linear text classifier whose weights are the train split's class centroids (no training);
    the ``forgotten`` categories are never predicted."""
    train = train_lib.read_examples(train_files, TEXT)
    settings = text_lib.TextSettings(min_df=1)
    vocabulary = text_lib.fit_vocabulary(train.text(TEXT), settings)
    featurizer = text_lib.TextFeaturizer(vocabulary, settings)
    x = text_lib.featurize(featurizer, train.text(TEXT))
    y = np.array([LABELS.index(label) for label in train.labels])
    centroids = np.stack([x[y == k].mean(axis=0) for k in range(len(LABELS))])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    head = model_lib.build_text_head(len(vocabulary), len(LABELS), 0.0, 0)
    bias = np.zeros(len(LABELS), np.float32)
    for label in forgotten:
        centroids[LABELS.index(label)] = 0.0
        bias[LABELS.index(label)] = -5.0
    head.get_layer("text_probabilities").set_weights([centroids.T.astype(np.float32), bias])
    return export_lib.Classifier(LABELS, featurizer=featurizer, text_head=head, text_columns=TEXT)


def _model_artifact(uri: Path, name: str, artifact_id: int, role: str = "candidate"):
    model = standard_artifacts.Model()
    model.uri = str(uri)
    model.id = artifact_id
    model.set_string_custom_property("candidate", name)
    model.set_string_custom_property("role", role)
    return model


def _outcomes(model_dir: str, test_files) -> Tuple[np.ndarray, np.ndarray]:
    """Predicted and true class ids on the test split, through ``serving_examples`` (as TFMA calls it)."""
    signature = tf.saved_model.load(model_dir).signatures[model_contract.SERVING_EXAMPLES]
    predicted, truth = [], []
    for batch in tf.data.TFRecordDataset(test_files, compression_type="GZIP").batch(16):
        predicted.append(signature(examples=batch)["probabilities"].numpy().argmax(axis=1))
        parsed = tf.io.parse_example(batch, {"label": tf.io.FixedLenFeature([], tf.string)})
        truth.extend(LABELS.index(v.decode("utf-8")) for v in parsed["label"].numpy())
    return np.concatenate(predicted), np.array(truth)


@pytest.fixture(scope="module")
def evaluated(sample_examples, tmp_path_factory):
    """Three exported models, one CandidateEvaluator run over the test split, and the outcomes computed here."""
    root = tmp_path_factory.mktemp("model_gate")
    test_files = sorted(str(p) for p in (sample_examples / "Split-test").glob("*.gz"))
    classifiers = {"good": _text_classifier([str(sample_examples / "Split-train" / "*.gz")]),
                   "constant": _tiny_image_classifier(LABELS, 0), "baseline": _tiny_image_classifier(LABELS, 2)}
    models = {}
    for i, (name, classifier) in enumerate(classifiers.items()):
        models[name] = _model_artifact(root / name, name, 100 + i, "baseline" if name == "baseline" else "candidate")
        export_lib.export(classifier, os.path.join(models[name].uri, model_contract.TRAINER_SERVING_SUBDIR),
                          {"backbone": "tiny"})
    examples = standard_artifacts.Examples()  # as CatalogueExampleGen records it
    examples.uri = str(sample_examples)
    examples.split_names = artifact_utils.encode_split_names(["train", "eval", "test"])
    examples.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
    evaluation = standard_artifacts.ModelEvaluation()
    evaluation.uri = str(root / "evaluation")
    evaluation.id = 200
    os.makedirs(evaluation.uri)
    config = tfma_eval.eval_config(TFMA_MIN_ACCURACY, TFMA_MIN_IMPROVEMENT, list(CANDIDATES))
    executor = evaluator_executor.Executor(
        base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=["--direct_num_workers=1"]))
    executor.Do(
        {evaluator_constants.EXAMPLES_KEY: [examples], evaluator_constants.BASELINE_KEY: [models["baseline"]],
         **{f"{evaluator_constants.MODEL_KIND}__{n}": [models[n]] for n in CANDIDATES}},
        {evaluator_constants.EVALUATION_KEY: [evaluation]},
        {evaluator_constants.EVAL_CONFIG: proto_utils.proto_to_json(config), evaluator_constants.SPLIT: "test"},
    )
    outcomes = {name: _outcomes(model_contract.serving_dir(m.uri), test_files) for name, m in models.items()}
    return root, examples, models, evaluation, outcomes


def _gate(evaluated, out: Path, candidate: str, *, min_accuracy=TFMA_MIN_ACCURACY, min_improvement=TFMA_MIN_IMPROVEMENT,
          significance_level=0.05, require_significance=False, baseline=None, champion=None, champion_tolerance=0.0):
    _, examples, models, evaluation, _ = evaluated
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(out / "blessing")
    comparison = ModelComparison()
    comparison.uri = str(out / "comparison")
    os.makedirs(blessing.uri)
    os.makedirs(comparison.uri)
    gate_executor.Executor().Do(
        {gate_executor.EXAMPLES_KEY: [examples], gate_executor.CANDIDATE_KEY: [models[candidate]],
         gate_executor.BASELINE_KEY: [baseline or models["baseline"]], gate_executor.EVALUATION_KEY: [evaluation],
         **({gate_executor.CHAMPION_KEY: [champion]} if champion is not None else {})},
        {gate_executor.BLESSING_KEY: [blessing], gate_executor.COMPARISON_KEY: [comparison]},
        {"split": "test", "min_accuracy": min_accuracy, "min_improvement": min_improvement,
         "significance_level": significance_level, "require_significance": int(require_significance),
         "champion_tolerance": champion_tolerance},
    )
    report = json.loads((out / "comparison" / gate_executor.COMPARISON_FILE).read_text())
    return blessing, report


def _mcnemar_p(b: int, c: int) -> float:
    """Independent reference: exact two-sided binomial below 25 discordant pairs, else chi-squared (1 dof)."""
    if b + c == 0:
        return 1.0
    if b + c < 25:
        return float(scipy_stats.binomtest(b, b + c, 0.5).pvalue)
    return float(scipy_stats.chi2.sf((abs(b - c) - 1) ** 2 / (b + c), df=1))


def _expected(evaluated, candidate: str) -> Dict[str, object]:
    outcomes = evaluated[4]
    predicted, truth = outcomes[candidate]
    base_predicted, base_truth = outcomes["baseline"]
    assert np.array_equal(truth, base_truth)
    cand_ok, base_ok = predicted == truth, base_predicted == truth
    b, c = int(np.sum(cand_ok & ~base_ok)), int(np.sum(~cand_ok & base_ok))
    return {
        "n": len(truth), "truth": truth, "predicted": predicted, "accuracy": float(cand_ok.mean()),
        "baseline_accuracy": float(base_ok.mean()), "b": b, "c": c, "p": _mcnemar_p(b, c),
        "matrix": sk_metrics.confusion_matrix(truth, predicted, labels=range(len(LABELS))).tolist(),
        "baseline_matrix": sk_metrics.confusion_matrix(truth, base_predicted, labels=range(len(LABELS))).tolist(),
        "macro_f1": float(sk_metrics.f1_score(truth, predicted, labels=sorted(set(truth)), average="macro",
                                              zero_division=0)),
    }


def _is_blessed_on_disk(blessing) -> Tuple[bool, bool]:
    return (os.path.exists(os.path.join(blessing.uri, "BLESSED")),
            os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED")))


def test_the_evaluator_evaluated_every_model_in_one_run(evaluated):
    _, _, _, evaluation, outcomes = evaluated
    assert evaluation.get_string_custom_property("models") == "good,constant,baseline"
    # "constant" fails its TFMA thresholds, so the run as a whole does not validate.
    assert evaluation.get_int_custom_property("validation_ok") == 0
    for name in CANDIDATES:
        results = tfma_eval.read_results(evaluation.uri, LABELS, name)
        predicted, truth = outcomes[name]
        assert results["candidate"]["examples"] == len(truth) > 20
        assert results["candidate"]["accuracy"] == pytest.approx(float(np.mean(predicted == truth)), abs=1e-6)


def test_a_clearly_better_candidate_is_blessed_and_the_comparison_matches_the_models(evaluated, tmp_path):
    expected = _expected(evaluated, "good")
    assert expected["accuracy"] > 0.8 and expected["baseline_accuracy"] < 0.3  # the fixture is what it claims
    blessing, report = _gate(evaluated, tmp_path, "good")
    models = evaluated[2]

    assert blessing.get_int_custom_property("blessed") == 1
    assert _is_blessed_on_disk(blessing) == (True, False)
    assert blessing.get_float_custom_property("accuracy") == pytest.approx(expected["accuracy"])
    assert blessing.get_string_custom_property("candidate") == "good"
    assert json.loads(blessing.get_string_custom_property("reasons")) == []
    assert blessing.get_int_custom_property("current_model_id") == models["good"].id
    assert blessing.get_string_custom_property("current_model") == models["good"].uri
    assert blessing.get_int_custom_property("baseline_model_id") == models["baseline"].id

    assert report["blessed"] is True and report["split"] == "test" and report["candidate_name"] == "good"
    assert report["labels"] == LABELS
    assert report["candidate"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert report["baseline"]["accuracy"] == pytest.approx(expected["baseline_accuracy"])
    assert report["candidate"]["examples"] == report["baseline"]["examples"] == expected["n"]
    assert report["candidate"]["confusion_matrix"] == expected["matrix"]
    assert report["baseline"]["confusion_matrix"] == expected["baseline_matrix"]
    assert report["candidate"]["macro_f1"] == pytest.approx(expected["macro_f1"])
    for i, label in enumerate(LABELS):
        support = int(np.sum(expected["truth"] == i))
        recall = float(np.mean(expected["predicted"][expected["truth"] == i] == i)) if support else 0.0
        assert report["candidate"]["per_category"][label]["support"] == support
        assert report["candidate"]["per_category"][label]["recall"] == pytest.approx(recall)
    assert report["mcnemar"]["candidate_only_correct"] == expected["b"]
    assert report["mcnemar"]["baseline_only_correct"] == expected["c"]
    assert report["mcnemar"]["p_value"] == pytest.approx(expected["p"], rel=1e-9)
    assert report["tfma"]["paired"]["both_correct"] == int(np.sum(
        (expected["predicted"] == expected["truth"]) & (evaluated[4]["baseline"][0] == expected["truth"])))
    assert report["tfma"]["validation_ok"] is True and report["tfma"]["evaluation_uri"] == evaluated[3].uri
    assert [(c["name"], c["passed"]) for c in report["checks"]] == [
        ("accuracy_floor", True), ("improvement_over_baseline", True), ("tfma_evaluator", True),
        ("not_worse_than_champion", True)]
    gain = [c for c in report["checks"] if c["name"] == "improvement_over_baseline"][0]
    assert gain["value"] == pytest.approx(expected["accuracy"] - expected["baseline_accuracy"])


def test_below_the_accuracy_floor_is_not_blessed(evaluated, tmp_path):
    expected = _expected(evaluated, "good")
    blessing, report = _gate(evaluated, tmp_path, "good", min_accuracy=0.99)

    assert blessing.get_int_custom_property("blessed") == 0
    assert _is_blessed_on_disk(blessing) == (False, True)
    assert blessing.get_float_custom_property("accuracy") == pytest.approx(expected["accuracy"])
    assert json.loads(blessing.get_string_custom_property("reasons")) == [
        f"candidate test accuracy {expected['accuracy']:.4f} must be >= 0.9900 (evaluation.min_accuracy)"]
    assert [(c["name"], c["passed"]) for c in report["checks"]] == [
        ("accuracy_floor", False), ("improvement_over_baseline", True), ("tfma_evaluator", True),
        ("not_worse_than_champion", True)]
    assert report["blessed"] is False


def test_too_small_an_improvement_is_not_blessed(evaluated, tmp_path):
    expected = _expected(evaluated, "good")
    gain = expected["accuracy"] - expected["baseline_accuracy"]
    blessing, report = _gate(evaluated, tmp_path, "good", min_improvement=round(gain + 0.05, 2))

    assert blessing.get_int_custom_property("blessed") == 0
    assert _is_blessed_on_disk(blessing) == (False, True)
    assert json.loads(blessing.get_string_custom_property("reasons")) == [
        f"candidate {expected['accuracy']:.4f} - baseline {expected['baseline_accuracy']:.4f} = {gain:+.4f} "
        f"must be >= {round(gain + 0.05, 2):+.4f} (evaluation.min_improvement)"]
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["improvement_over_baseline"]


def test_a_worse_candidate_fails_the_gate_and_tfmas_own_thresholds(evaluated, tmp_path):
    expected = _expected(evaluated, "constant")
    assert expected["accuracy"] < expected["baseline_accuracy"]
    blessing, report = _gate(evaluated, tmp_path, "constant")

    assert blessing.get_int_custom_property("blessed") == 0
    assert blessing.get_string_custom_property("candidate") == "constant"
    assert blessing.get_int_custom_property("current_model_id") == evaluated[2]["constant"].id
    assert [c["name"] for c in report["checks"] if not c["passed"]] == [
        "accuracy_floor", "improvement_over_baseline", "tfma_evaluator"]
    reasons = json.loads(blessing.get_string_custom_property("reasons"))  # one entry per failed check
    gain = expected["accuracy"] - expected["baseline_accuracy"]
    assert len(reasons) == 3
    assert reasons[-1] == (f"TFMA thresholds (Evaluator): accuracy {expected['accuracy']:.4f} must be >= 0.3000; "
                           f"accuracy change vs baseline {gain:+.4f} must be >= +0.0500")
    # Only this candidate's TFMA failures: "good" passed its own.
    assert report["tfma"]["failures"] == [f"accuracy {expected['accuracy']:.4f} must be >= 0.3000",
                                          f"accuracy change vs baseline {gain:+.4f} must be >= +0.0500"]
    assert report["candidate"]["confusion_matrix"] == expected["matrix"]
    assert (report["mcnemar"]["candidate_only_correct"], report["mcnemar"]["baseline_only_correct"]) == (
        expected["b"], expected["c"])
    assert report["mcnemar"]["p_value"] == pytest.approx(expected["p"], rel=1e-9)


def test_require_significance_blesses_a_significant_gain_only(evaluated, tmp_path):
    expected = _expected(evaluated, "good")
    blessing, report = _gate(evaluated, tmp_path / "lenient", "good", require_significance=True, significance_level=0.05)
    assert expected["p"] < 0.05
    assert blessing.get_int_custom_property("blessed") == 1
    (check,) = [c for c in report["checks"] if c["name"] == "mcnemar_significance"]
    assert check["passed"] is True and check["value"] == pytest.approx(expected["p"], rel=1e-9)
    assert check["threshold"] == 0.05

    level = expected["p"] / 10  # the same evidence, a stricter level
    strict, report = _gate(evaluated, tmp_path / "strict", "good", require_significance=True, significance_level=level)
    assert strict.get_int_custom_property("blessed") == 0
    assert _is_blessed_on_disk(strict) == (False, True)
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["mcnemar_significance"]
    assert json.loads(strict.get_string_custom_property("reasons")) == [
        f"McNemar p-value {expected['p']:.4g} must be < {level} with the candidate right more often where the "
        f"models disagree ({expected['b']} vs {expected['c']}) (evaluation.require_significance)"]
    # Without the requirement, the same p-value is reported but does not decide.
    lenient, report = _gate(evaluated, tmp_path / "off", "good", require_significance=False, significance_level=level)
    assert lenient.get_int_custom_property("blessed") == 1
    assert "mcnemar_significance" not in [c["name"] for c in report["checks"]]
    assert report["mcnemar"]["p_value"] == pytest.approx(expected["p"], rel=1e-9)


def test_a_baseline_with_other_labels_is_refused(evaluated, tmp_path):
    other = _model_artifact(tmp_path / "other_baseline", "baseline", 300, "baseline")
    export_lib.export(_tiny_image_classifier(list(reversed(LABELS)), 0),
                      os.path.join(other.uri, model_contract.TRAINER_SERVING_SUBDIR), {"backbone": "tiny"})
    with pytest.raises(ValueError, match="different label sets"):
        _gate(evaluated, tmp_path, "good", baseline=other)
    assert not os.listdir(tmp_path / "blessing") and not os.listdir(tmp_path / "comparison")


def test_a_candidate_the_evaluation_does_not_hold_is_refused(evaluated, tmp_path):
    models = evaluated[2]
    stranger = _model_artifact(Path(models["good"].uri), "b7_text", 400)  # same files, another candidate's name
    evaluated = (*evaluated[:2], {**models, "b7_text": stranger}, *evaluated[3:])
    with pytest.raises(ValueError, match="holds no metrics of candidate 'b7_text'"):
        _gate(evaluated, tmp_path, "b7_text")
    assert not os.listdir(tmp_path / "blessing")



def test_the_pusher_reports_one_reason_per_failed_gate_check(evaluated, tmp_path):
    """The gate's blessing of a worse candidate, read by the Pusher's executor (gate → pusher, no pipeline)."""
    from placedemarche.components import candidate_inputs
    from placedemarche.components.serving_pusher import executor as pusher_executor

    blessing, report = _gate(evaluated, tmp_path / "gate", "constant")
    failed = [c["explanation"] for c in report["checks"] if not c["passed"]]
    assert len(failed) == 3
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    os.makedirs(pushed.uri)
    pusher_executor.Executor().Do(
        {candidate_inputs.key(pusher_executor.MODEL_KEY, "constant"): [evaluated[2]["constant"]],
         candidate_inputs.key(pusher_executor.BLESSING_KEY, "constant"): [blessing]},
        {pusher_executor.PUSHED_KEY: [pushed]}, {"serving_root": str(tmp_path / "serving"), "model_name": "m"})
    assert pushed.get_int_custom_property("pushed") == 0
    (entry,) = json.loads((tmp_path / "pushed" / pusher_executor.SELECTION_FILE).read_text())["candidates"]
    assert entry["accuracy"] == pytest.approx(blessing.get_float_custom_property("accuracy"))
    assert entry["gate_reasons"] == failed


def test_a_candidate_named_like_the_baseline_is_refused_clearly(evaluated, tmp_path):
    _, examples, models, _, _ = evaluated
    evaluation = standard_artifacts.ModelEvaluation()
    evaluation.uri = str(tmp_path / "evaluation")
    os.makedirs(evaluation.uri)
    with pytest.raises(ValueError, match="baseline"):
        config = tfma_eval.eval_config(TFMA_MIN_ACCURACY, TFMA_MIN_IMPROVEMENT, ["baseline"])
        evaluator_executor.Executor().Do(
            {evaluator_constants.EXAMPLES_KEY: [examples], evaluator_constants.BASELINE_KEY: [models["baseline"]],
             f"{evaluator_constants.MODEL_KIND}__baseline": [models["good"]]},
            {evaluator_constants.EVALUATION_KEY: [evaluation]},
            {evaluator_constants.EVAL_CONFIG: proto_utils.proto_to_json(config), evaluator_constants.SPLIT: "test"})


# --- The served champion (issue 14): evaluated in the same TFMA pass, a check of its own in the gate.

def _champion_artifact(uri: Path, serving_root: str, model_name: str = "m", stable_version: int = 0):
    from placedemarche.components.champion import constants as champion_constants
    from placedemarche.components.champion import executor as champion_executor

    champion = standard_artifacts.Model()
    champion.uri = str(uri)
    champion_executor.Executor().Do({}, {champion_constants.CHAMPION_KEY: [champion]},
                                    {"serving_root": serving_root, "model_name": model_name,
                                     "stable_version": stable_version, "serving_state": ""})
    return champion


@pytest.fixture(scope="module")
def with_champion(evaluated, sample_examples, tmp_path_factory):
    """``good`` pushed as served version 1 (the champion); candidates ``good`` again and ``weak``
    evaluated against the baseline and that champion in one CandidateEvaluator run."""
    from placedemarche.components.serving_pusher import push as push_lib

    root = tmp_path_factory.mktemp("champion")
    _, examples, models, _, outcomes = evaluated
    serving_root = str(root / "serving")
    push_lib.push(model_contract.serving_dir(models["good"].uri), serving_root, "m")
    weak = _model_artifact(root / "weak", "weak", 150)
    export_lib.export(_text_classifier([str(sample_examples / "Split-train" / "*.gz")], ("Watches", "Computers")),
                      os.path.join(weak.uri, model_contract.TRAINER_SERVING_SUBDIR), {"backbone": "tiny"})
    champion = _champion_artifact(root / "champion", serving_root)
    evaluation = standard_artifacts.ModelEvaluation()
    evaluation.uri = str(root / "evaluation")
    os.makedirs(evaluation.uri)
    config = tfma_eval.eval_config(TFMA_MIN_ACCURACY, TFMA_MIN_IMPROVEMENT, ["good", "weak"])
    executor = evaluator_executor.Executor(
        base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=["--direct_num_workers=1"]))
    executor.Do(
        {evaluator_constants.EXAMPLES_KEY: [examples], evaluator_constants.BASELINE_KEY: [models["baseline"]],
         evaluator_constants.CHAMPION_KEY: [champion],
         f"{evaluator_constants.MODEL_KIND}__good": [models["good"]], f"{evaluator_constants.MODEL_KIND}__weak": [weak]},
        {evaluator_constants.EVALUATION_KEY: [evaluation]},
        {evaluator_constants.EVAL_CONFIG: proto_utils.proto_to_json(config), evaluator_constants.SPLIT: "test"},
    )
    test_files = sorted(str(p) for p in (sample_examples / "Split-test").glob("*.gz"))
    outcomes = {**outcomes, "weak": _outcomes(model_contract.serving_dir(weak.uri), test_files)}
    return root, examples, {**models, "weak": weak}, evaluation, outcomes, champion, serving_root


def test_the_served_champion_is_evaluated_with_the_candidates(with_champion):
    _, _, _, evaluation, outcomes, champion, serving_root = with_champion
    assert champion.get_int_custom_property("served") == 1 and champion.get_int_custom_property("version") == 1
    assert champion.get_string_custom_property("how") == "highest version"
    assert evaluation.get_string_custom_property("models") == "good,weak,champion,baseline"
    assert evaluation.get_int_custom_property(evaluator_constants.CHAMPION_COMPARED) == 1
    assert evaluation.get_int_custom_property(evaluator_constants.CHAMPION_VERSION) == 1
    results = tfma_eval.read_results(evaluation.uri, LABELS, "weak", "champion", "champion_paired")
    weak_predicted, truth = outcomes["weak"]
    champion_predicted, _ = outcomes["good"]  # the champion is good's SavedModel, served
    assert results["champion"]["accuracy"] == pytest.approx(float(np.mean(champion_predicted == truth)), abs=1e-6)
    weak_ok, champion_ok = weak_predicted == truth, champion_predicted == truth
    assert results["champion_paired"] == {
        "candidate_only_correct": int(np.sum(weak_ok & ~champion_ok)),
        "baseline_only_correct": int(np.sum(~weak_ok & champion_ok)),
        "both_correct": int(np.sum(weak_ok & champion_ok)), "both_wrong": int(np.sum(~weak_ok & ~champion_ok))}


def test_a_challenger_that_beats_the_baseline_but_not_the_champion_is_not_blessed(with_champion, tmp_path):
    root, examples, models, evaluation, outcomes, champion, _ = with_champion
    gate_input = (root, examples, models, evaluation, outcomes)
    weak_predicted, truth = outcomes["weak"]
    weak, champ, base = (float(np.mean(p == truth)) for p in (weak_predicted, outcomes["good"][0],
                                                                outcomes["baseline"][0]))
    assert weak > base + TFMA_MIN_IMPROVEMENT and weak >= TFMA_MIN_ACCURACY and weak < champ - 0.05
    blessing, report = _gate(gate_input, tmp_path / "strict", "weak", champion=champion)
    assert blessing.get_int_custom_property("blessed") == 0
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["not_worse_than_champion"]
    (reason,) = json.loads(blessing.get_string_custom_property("reasons"))
    assert reason.startswith(f"candidate {weak:.4f} - champion {champ:.4f} (served version 1) = {weak - champ:+.4f} "
                             "must be >= -0.0000 (evaluation.champion_tolerance)")
    block = report["champion"]
    assert block["compared"] is True and block["version"] == 1 and block["how"] == "highest version"
    assert block["accuracy"] == pytest.approx(champ) and block["difference"] == pytest.approx(weak - champ)
    assert block["per_category"]["Watches"]["support"] > 0
    assert block["mcnemar"]["baseline_only_correct"] == int(np.sum((weak_predicted != truth) & (outcomes["good"][0] == truth)))
    # A tolerance wider than the gap lets it through; the same model as the champion always passes.
    tolerant, _ = _gate(gate_input, tmp_path / "tolerant", "weak", champion=champion,
                        champion_tolerance=round(champ - weak + 0.01, 4))
    assert tolerant.get_int_custom_property("blessed") == 1
    same, report = _gate(gate_input, tmp_path / "same", "good", champion=champion)
    assert same.get_int_custom_property("blessed") == 1
    assert report["champion"]["difference"] == pytest.approx(0.0)


def test_the_first_run_says_nothing_is_served(evaluated, tmp_path):
    champion = _champion_artifact(tmp_path / "champion", str(tmp_path / "empty-serving"))
    assert champion.get_int_custom_property("served") == 0
    blessing, report = _gate(evaluated, tmp_path, "good", champion=champion)
    assert blessing.get_int_custom_property("blessed") == 1
    assert report["champion"]["compared"] is False and report["champion"]["version"] is None
    (check,) = [c for c in report["checks"] if c["name"] == "not_worse_than_champion"]
    assert check["passed"] is True and check["value"] is None
    assert "first run: nothing is served under" in check["explanation"]


def test_the_champion_follows_the_stable_label_and_refuses_a_missing_one(evaluated, tmp_path):
    from placedemarche.components.champion import champion as champion_lib
    from placedemarche.components.serving_pusher import push as push_lib

    models = evaluated[2]
    serving_root = str(tmp_path / "serving")
    assert champion_lib.resolve(serving_root, "m").how == champion_lib.NOTHING
    # A stable label set before anything is served: still the first run, not an error.
    first = champion_lib.resolve(serving_root, "m", stable_version=1)
    assert first.how == champion_lib.NOTHING and "serving.stable_version=1" in first.reason
    before = champion_lib.serving_state(serving_root, "m")
    push_lib.push(model_contract.serving_dir(models["good"].uri), serving_root, "m")
    push_lib.push(model_contract.serving_dir(models["constant"].uri), serving_root, "m")
    assert champion_lib.serving_state(serving_root, "m") != before
    state = champion_lib.serving_state(serving_root, "m")
    os.makedirs(os.path.join(serving_root, "m", "3"))  # a half-written version never counts
    assert champion_lib.serving_state(serving_root, "m") == state
    assert champion_lib.serving_state(serving_root, "m", stable_version=1) != state
    assert champion_lib.resolve(serving_root, "m").version == 2
    stable = champion_lib.resolve(serving_root, "m", stable_version=1)
    assert (stable.version, stable.how) == (1, champion_lib.STABLE)
    with pytest.raises(champion_lib.ChampionError, match=r"stable_version=3 .* no complete version 3"):
        champion_lib.resolve(serving_root, "m", stable_version=3)
    # A champion trained on other categories is not compared, and the evaluation says why.
    other = tmp_path / "other"
    export_lib.export(_tiny_image_classifier(list(reversed(LABELS)), 0), str(other), {"backbone": "tiny"})
    assert "other categories" in champion_lib.not_comparable(str(other), LABELS)
    assert champion_lib.not_comparable(model_contract.serving_dir(models["good"].uri), LABELS) is None
