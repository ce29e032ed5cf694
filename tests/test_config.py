"""The configuration: defaults are the proof of concept's recipe; every bad input is refused clearly."""

from __future__ import annotations

import dataclasses

import pytest

from placedemarche.pipeline.config import ConfigError, PipelineConfig, describe_keys, dump_yaml, load_config


def test_defaults_are_the_proof_of_concept_recipe():
    cfg = load_config()
    assert [c.name for c in cfg.candidates] == ["b7_image", "b7_text"]
    poc = cfg.candidate("b7_image")  # the proof of concept's model exactly: frozen B7, image only
    assert (poc.backbone, poc.image_size, poc.augmentation, poc.text_columns) == ("efficientnet_b7", 224, False, ())
    text = cfg.candidate("b7_text")  # the same picture features plus the listing's words
    assert (text.backbone, text.text_columns) == ("efficientnet_b7", ("product_name", "description"))
    assert not hasattr(cfg.baseline, "text_columns")  # the baseline (VGG19) reads pictures only
    assert cfg.baseline.backbone == "vgg19"
    assert cfg.baseline.augmentation is True
    assert cfg.training.optimizer == "rmsprop"
    assert cfg.training.loss == "categorical_crossentropy"
    assert cfg.evaluation.metric == "accuracy"
    assert cfg.data.label_depth == 1
    assert cfg.data.category_column == "product_category_tree"
    assert all(c.weights == "imagenet" for c in cfg.candidates)
    assert cfg.training.allow_random_weights is False


def test_config_is_immutable():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.training.epochs = 3  # type: ignore[misc]


def test_yaml_file_then_set_overrides_in_that_order(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "training:\n  epochs: 7\n  learning_rate: 0.01\ncandidates:\n  b7_text:\n    backbone: efficientnet_b0\n"
    )
    cfg = load_config(path, ["training.epochs=3", "data.label_depth=2", "serving.model_name=123"])
    assert cfg.training.epochs == 3  # --set wins over the file
    assert cfg.training.learning_rate == pytest.approx(0.01)  # from the file
    assert cfg.candidate("b7_text").backbone == "efficientnet_b0"
    assert cfg.candidate("b7_image").backbone == "efficientnet_b7"  # untouched candidate keeps its defaults
    assert cfg.baseline.backbone == "vgg19"  # untouched section keeps its own defaults
    assert cfg.data.label_depth == 2
    assert cfg.serving.model_name == "123"


def test_dumped_yaml_loads_back_equal(tmp_path):
    cfg = load_config(None, ["training.epochs=4", "data.data_dir=/data/cat", "explain.top_k=2",
                             "candidates.b7_text.text_word_ngrams=[1, 3]", "candidates.*.epochs=2"])
    path = tmp_path / "dump.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(path) == cfg


def test_replace_returns_validated_copy():
    cfg = PipelineConfig()
    assert cfg.replace(**{"training.epochs": 2}).training.epochs == 2
    assert cfg.training.epochs == 30
    with pytest.raises(ConfigError, match=r"'training\.epochs' \(from replace\(\)\) must be >= 0"):
        cfg.replace(**{"training.epochs": -2})


def test_describe_keys_lists_every_leaf_with_section_defaults():
    keys = describe_keys()
    assert keys["baseline.backbone"][0] == "vgg19"
    assert keys["candidates.b7_image.backbone"][0] == "efficientnet_b7"
    assert keys["candidates.b7_text.text_columns"][0] == ["product_name", "description"]
    assert "Maximum number of epochs" in keys["training.epochs"][1]
    assert all(help_ for _, help_ in keys.values()), "every key needs a help text"


@pytest.mark.parametrize(
    "override, message",
    [
        # unknown keys: name the key, list the allowed ones, suggest the close one
        (
            "training.epoch=3",
            r"unknown config key 'training\.epoch' \(from --set\); allowed keys in section "
            r"'training': epochs, .*did you mean 'training\.epochs'\?",
        ),
        ("trainer.epochs=3", r"unknown config key 'trainer\.epochs'.*allowed keys at the top level: name, data"),
        ("training.epochs.x=1", r"'training\.epochs' is a value, not a section"),
        ("training=3", r"'training' \(from --set\) is a section, not a value; set one of: training\.epochs"),
        # wrong types
        ("training.epochs=three", r"'training\.epochs' \(from --set\) must be an integer, got 'three' \(str\)"),
        ("training.epochs=2.5", r"'training\.epochs' .* must be an integer, got 2\.5 \(float\)"),
        ("training.learning_rate=fast", r"'training\.learning_rate' .* must be a number, got 'fast'"),
        ("training.mixed_precision=maybe", r"'training\.mixed_precision' .* must be true or false, got 'maybe'"),
        ("data.images_dir=[a, b]", r"'data\.images_dir' .* must be a string, got \['a', 'b'\] \(list\)"),
        # out of range / not allowed
        ("training.epochs=-1", r"'training\.epochs' \(from --set\) must be >= 0, got -1"),
        ("candidates.b7_image.dropout=1.0", r"'candidates\.b7_image\.dropout' .* must be < 1\.0, got 1\.0"),
        ("data.test_fraction=-0.1", r"'data\.test_fraction' .* must be >= 0\.0, got -0\.1"),
        ("serving.rest_port=70000", r"'serving\.rest_port' .* must be <= 65535, got 70000"),
        ("candidates.b7_text.backbone=resnet",
         r"'candidates\.b7_text\.backbone' .* must be one of: efficientnet_b0, .*vgg19.*none; got 'resnet'"),
        ("baseline.backbone=none", r"'baseline\.backbone' .* must be one of: efficientnet_b0, .*vgg19, resnet50"),
        ("explain.masker=lime", r"'explain\.masker' .* must be one of: inpaint_telea, inpaint_ns, blur, mean; got 'lime'"),
        ("name=My_Pipeline", r"'name' .* must match \^\[a-z0-9\]\[a-z0-9-\]\*\$, got 'My_Pipeline'"),
        # several keys together
        ("data.min_image_side=1000", r"'data\.min_image_side' \(from --set\) = 1000 must not exceed data\.max_image_side = 600"),
        ("serving.grpc_port=8501", r"'serving\.grpc_port' and 'serving\.rest_port' must differ; both are 8501"),
        ("candidates.b7_image.weights=",
         r"'candidates\.b7_image\.weights' \(from --set\) must be 'imagenet', 'none' or a weights file path"),
        # candidates: addressed by name, like sections
        ("candidates.b7_txt.epochs=3", r"unknown candidate 'b7_txt' in config key 'candidates\.b7_txt\.epochs' "
                                       r"\(from --set\); candidates: b7_image, b7_text .*did you mean 'candidates\.b7_text'\?"),
        ("candidates.b7_text.epoch=3", r"allowed keys of a candidate: backbone, .*did you mean 'candidates\.b7_text\.epochs'\?"),
        ("candidates.b7_text=3", r"must name a candidate and one of its keys, e.g. 'candidates\.b7_image\.epochs'"),
        ("candidate.epochs=3", r"the 'candidate' section became 'candidates'.*'candidates\.b7_image\.epochs'"),
        ("candidates.b7_text.text_columns=[title]",
         r"'candidates\.b7_text\.text_columns' .* must be one of: product_name, description, brand; got 'title'"),
        ("candidates.b7_text.text_char_ngrams=[5, 3]", r"'candidates\.b7_text\.text_char_ngrams' .* must be \[lo, hi\] "
                                                       r"with 1 <= lo <= hi, or \[0, 0\] for none; got \[5, 3\]"),
        ("candidates.b7_text.text_max_words=many", r"'candidates\.b7_text\.text_max_words' .* must be an integer"),
        ("candidates.*.enabled=false", r"every candidate is disabled \(b7_image, b7_text\): enable at least one"),
        # malformed override
        ("epochs", r"override 'epochs' must look like section\.key=value"),
    ],
)
def test_bad_overrides_are_refused_with_the_key_and_the_rule(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epochs: -3\n")
    with pytest.raises(ConfigError, match=rf"'training\.epochs' \(from config file '{path}'\) must be >= 0"):
        load_config(path)
    path.write_text("trainign:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'trainign'.*did you mean 'training'\?"):
        load_config(path)
    path.write_text("training: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"'training' .* is a section: it must hold a mapping"):
        load_config(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"must hold a mapping of sections, got list"):
        load_config(path)
    path.write_text("training: {epochs: [\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"cannot read config file '.*missing\.yaml'"):
        load_config(tmp_path / "missing.yaml")


def test_candidates_as_a_yaml_list_define_the_whole_set(tmp_path):
    path = tmp_path / "candidates.yaml"
    path.write_text("candidates:\n  - name: text_only\n    backbone: none\n    text_columns: [product_name]\n"
                    "  - name: b0_text\n    backbone: efficientnet_b0\n    text_columns: product_name,description\n")
    cfg = load_config(path, ["candidates.b0_text.epochs=1"])
    assert [(c.name, c.backbone, c.text_columns, c.epochs) for c in cfg.candidates] == [
        ("text_only", "none", ("product_name",), None), ("b0_text", "efficientnet_b0", ("product_name", "description"), 1)]
    assert cfg.candidate("b0_text").image_size == 224  # unnamed keys take the candidate defaults
    path.write_text("candidates:\n  - name: a\n  - name: a\n")
    with pytest.raises(ConfigError, match=r"candidate names must be unique; a appear"):
        load_config(path)
    path.write_text("candidates:\n  - backbone: vgg16\n")
    with pytest.raises(ConfigError, match=r"item 1 must be a mapping with a 'name'"):
        load_config(path)
    path.write_text("candidates:\n  - name: baseline\n")
    with pytest.raises(ConfigError, match=r"'baseline' is the VGG19 baseline's name"):
        load_config(path)
    path.write_text("candidates:\n  - name: champion\n")
    with pytest.raises(ConfigError, match=r"'champion' is the served model's \(champion\) name"):
        load_config(path)
    path.write_text("candidates:\n  - name: pictures_nor_text\n    backbone: none\n")
    with pytest.raises(ConfigError, match=r"reads neither pictures .* nor text"):
        load_config(path)


def test_a_disabled_candidate_is_kept_but_not_run():
    cfg = load_config(None, ["candidates.b7_image.enabled=false"])
    assert [c.name for c in cfg.enabled_candidates] == ["b7_text"]
    assert cfg.candidate("b7_image").enabled is False
