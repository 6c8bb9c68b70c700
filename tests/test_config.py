import json

import pytest

from mdgan.config import ConfigError, TrainConfig, apply_overrides, load_config


def test_defaults_follow_dcgan_and_the_method():
    config = TrainConfig()
    assert config.optim.lr_g == 2e-4
    assert config.optim.lr_d == 2e-4
    assert config.optim.betas == (0.5, 0.999)
    assert config.optim.loss == "non-saturating"
    assert config.growth.milestones == [50, 100]
    assert config.growth.unit == "epochs"
    assert config.partition.num_classes == 4


@pytest.mark.parametrize(
    "name, text",
    [
        ("run.yaml", "optim:\n  lr_g: 0.001\ngrowth:\n  milestones: [5, 10]\n"),
        ("run.json", json.dumps({"optim": {"lr_g": 0.001}, "growth": {"milestones": [5, 10]}})),
        ("run.toml", "[optim]\nlr_g = 0.001\n[growth]\nmilestones = [5, 10]\n"),
    ],
)
def test_load_each_format(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    config = load_config(path)
    assert config.optim.lr_g == 0.001
    assert config.growth.milestones == [5, 10]


def test_overrides_replace_file_values(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr_g: 0.001\n")
    config = load_config(path, ["optim.lr_g=1e-5", "data.path=/data/celeba", "data.source=folder"])
    assert config.optim.lr_g == 1e-5
    assert str(config.data.path) == "/data/celeba"


def test_unknown_key_names_the_field(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.learning_rate: unknown key"):
        load_config(path)


def test_invalid_value_names_the_field():
    with pytest.raises(ConfigError, match=r"optim\.batch_size"):
        load_config(None, ["optim.batch_size=0"])
    with pytest.raises(ConfigError, match=r"growth\.milestones"):
        load_config(None, ["growth.milestones=[10, 5]"])
    with pytest.raises(ConfigError, match=r"device"):
        load_config(None, ["device=tpu"])
    with pytest.raises(ConfigError, match="image_size must be 32 or 64"):
        load_config(None, ["data.image_size=48"])


def test_folder_source_needs_path():
    with pytest.raises(ConfigError, match="data.path is required"):
        load_config(None, ["data.source=folder"])


def test_prompt_settings_are_checked():
    with pytest.raises(ConfigError, match="partition.prompts or partition.prompt_hierarchy"):
        load_config(None, ["partition.method=prompts"])
    with pytest.raises(ConfigError, match="must contain"):
        load_config(None, ["partition.prompt_templates=['a photo']"])
    with pytest.raises(ConfigError, match="num_classes is 3 but 2 prompts"):
        load_config(None, ["partition.method=prompts", "partition.prompts=[a, b]", "partition.num_classes=3"])
    with pytest.raises(ConfigError, match="one or two nodes"):
        load_config(None, ["partition.method=prompts", "partition.prompt_hierarchy=[[a, b, c]]"])
    config = load_config(None, ["partition.method=prompts", "partition.prompt_hierarchy=[[a, b], [c, d]]"])
    assert config.partition.prompt_hierarchy == [["a", "b"], ["c", "d"]]


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["optim.lr_g"])


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    path = tmp_path / "run.ini"
    path.write_text("[optim]\n")
    with pytest.raises(ConfigError, match="unknown config format '.ini'"):
        load_config(path)


def test_example_configs_are_valid():
    from pathlib import Path

    examples = Path(__file__).resolve().parent.parent / "examples"
    paths = sorted(examples.glob("*.yaml"))
    assert paths
    for path in paths:
        config = load_config(path)
        assert config.data.source == "folder"


def test_configuration_doc_is_current():
    from pathlib import Path

    from mdgan.config import config_reference

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    generated = doc.split("<!-- BEGIN GENERATED -->\n", 1)[1].split("<!-- END GENERATED -->", 1)[0]
    assert generated.strip() == config_reference().strip(), (
        "docs/configuration.md is stale; regenerate it with make docs"
    )


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"optim\.stpes: unknown key; did you mean optim\.steps\?"):
        load_config(None, ["optim.stpes=3"])
