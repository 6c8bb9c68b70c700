import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import needs_fashion_mnist
from mdgan.cli import app
from mdgan.config import ConfigError, EvalConfig, load_config
from mdgan.data import ImageArray
from mdgan.embedders import PixelEmbedder
from mdgan.evaluation import Routing, evaluate_generator, plan_evaluation, run_directory
from mdgan.metrics import FeatureSpace
from mdgan.selectors import TorchSelector
from mdgan.trainer import Trainer
from test_trainer import small_config, trainer_state

GREY_LEVELS = (-0.8, 0.0, 0.8)


@pytest.fixture(scope="module")
def three_grey_levels():
    """300 noisy 32x32 images, 100 around each of three grey levels: three obvious classes."""
    rng = np.random.default_rng(0)
    levels = np.repeat([int((value + 1) * 127.5) for value in GREY_LEVELS], 100)
    pixels = levels[:, None, None, None] + rng.normal(0, 12, size=(300, 32, 32, 1))
    return ImageArray(np.clip(pixels, 0, 255).astype(np.uint8), name="grey-levels")


class GreyLevelGenerator(torch.nn.Module):
    """Noisy grey images at the levels given, chosen uniformly by the first noise component."""

    latent_dim = 4

    def __init__(self, levels):
        super().__init__()
        self.register_buffer("levels", torch.tensor(levels))
        self.weight = torch.nn.Parameter(torch.ones(()))  # gives the module a device

    def forward(self, latent):
        choice = (torch.special.ndtr(latent[:, 0]) * len(self.levels)).long().clamp(max=len(self.levels) - 1)
        base = self.levels[choice].view(-1, 1, 1, 1) + 0.03 * latent[:, 1].view(-1, 1, 1, 1)
        texture = 0.05 * latent[:, 2:3, None, None].expand(-1, 1, 32, 32) * self.weight
        return (base + texture).clamp(-1, 1).expand(-1, 1, 32, 32).contiguous()


def grey_routing(dataset):
    embedder = PixelEmbedder(4, 1)
    features = embedder.embed_images(dataset.batch(np.arange(len(dataset))))
    true_labels = torch.arange(len(dataset)) // 100
    means = torch.stack([features[true_labels == k].mean(dim=0) for k in range(3)])
    selector = TorchSelector().fit(means)
    return Routing.from_features(embedder, selector, features, ["dark", "grey", "light"], level=2)


SMALL_EVAL = EvalConfig(
    num_samples=600, batch_size=200, kid_subsets=5, kid_subset_size=100, min_class_samples=50
)


def test_routing_labels_real_images_by_nearest_mean(three_grey_levels):
    routing = grey_routing(three_grey_levels)
    assert np.bincount(routing.real_labels).tolist() == [100, 100, 100]


def test_generator_missing_a_class_is_reported_dropped(three_grey_levels, tmp_path):
    routing = grey_routing(three_grey_levels)
    space = FeatureSpace("pixels", PixelEmbedder(8, 1))
    generator = GreyLevelGenerator(GREY_LEVELS[:2])
    result = evaluate_generator(
        generator, three_grey_levels, SMALL_EVAL, [space], metrics={"fd", "kid", "coverage"},
        routing=routing, cache_dir=tmp_path, step=7,
    )
    coverage = result.coverage
    assert coverage["dropped"] == [2]
    light = coverage["classes"][2]
    assert light["generated_count"] == 0
    assert light["dropped"] is True
    assert light["fd"] == {"fd_pixels@0": None}
    assert coverage["classes"][0]["dropped"] is False
    assert result.metrics["coverage_dropped@600"] == 1.0
    assert result.metrics["coverage_tv@600"] == pytest.approx(1 / 3, abs=0.05)
    assert set(result.metrics) >= {"fd_pixels@600", "kid_pixels@600", "kid_pixels@600_std", "coverage_kl@600"}
    record = result.to_record()
    assert record["step"] == 7
    assert record["feature_spaces"] == {"pixels": "pixels(size=8, channels=1)"}
    json.dumps(record)  # every value is JSON-serialisable


def test_generator_covering_all_classes_scores_better(three_grey_levels, tmp_path):
    routing = grey_routing(three_grey_levels)
    space = FeatureSpace("pixels", PixelEmbedder(8, 1))
    results = [
        evaluate_generator(
            GreyLevelGenerator(levels), three_grey_levels, SMALL_EVAL, [space],
            metrics={"fd", "kid", "coverage"}, routing=routing, cache_dir=tmp_path,
        ).metrics
        for levels in (GREY_LEVELS, GREY_LEVELS[:2])
    ]
    covering, dropping = results
    assert covering["coverage_dropped@600"] == 0.0
    assert covering["coverage_tv@600"] < 0.1
    assert covering["fd_pixels@600"] < dropping["fd_pixels@600"]
    assert covering["kid_pixels@600"] < dropping["kid_pixels@600"]


def test_evaluation_restores_generator_mode_and_rng(three_grey_levels, tmp_path):
    generator = GreyLevelGenerator(GREY_LEVELS).train()
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    evaluate_generator(
        generator, three_grey_levels, SMALL_EVAL, [FeatureSpace("pixels", PixelEmbedder(8, 1))],
        metrics={"fd"}, cache_dir=tmp_path,
    )
    assert generator.training
    torch.testing.assert_close(torch.rand(3), expected)


def test_plan_evaluation_fid_adds_inception():
    assert plan_evaluation(EvalConfig(metrics=["fid"]), "fashion-mnist") == (["inception"], {"fd"})
    spaces, metrics = plan_evaluation(EvalConfig(metrics=["fd", "fid", "coverage"]), "fashion-mnist")
    assert spaces == ["pixels", "fmnist-classifier", "inception"]
    assert metrics == {"fd", "coverage"}
    assert plan_evaluation(EvalConfig(), "folder")[0] == ["pixels"]


def test_eval_config_rejects_classifier_on_folders():
    with pytest.raises(ConfigError, match="fmnist-classifier"):
        load_config(None, ["data.source=folder", "data.path=/tmp", "eval.feature_spaces=[fmnist-classifier]"])


def test_eval_config_rejects_repeated_metric():
    with pytest.raises(ConfigError, match="eval.metrics"):
        load_config(None, ["eval.metrics=[fd, fd]"])


def test_run_directory_of_checkpoint(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "step_0000010.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    assert run_directory(checkpoint) == tmp_path / "run"
    assert run_directory(tmp_path / "run") == tmp_path / "run"


EVAL_DURING_TRAINING = {
    "eval.num_samples": 64,
    "eval.batch_size": 32,
    "eval.feature_spaces": "[pixels]",
    "eval.kid_subsets": 3,
    "eval.kid_subset_size": 32,
    "eval.min_class_samples": 10,
}


def test_trainer_evaluation_leaves_training_unchanged(tmp_path, random_images):
    cache = {"data.cache_dir": tmp_path / "cache"}
    plain = Trainer(small_config(tmp_path / "plain", 6, **cache), dataset=random_images)
    plain.train()
    evaluated = Trainer(
        small_config(tmp_path / "evaluated", 6, **cache, **EVAL_DURING_TRAINING, **{"eval.every": 3}),
        dataset=random_images,
    )
    evaluated.train()

    expected, actual = trainer_state(plain), trainer_state(evaluated)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)

    lines = (tmp_path / "evaluated" / "metrics.jsonl").read_text().splitlines()
    evaluations = [json.loads(line) for line in lines if "eval" in json.loads(line)]
    assert [record["step"] for record in evaluations] == [3, 6]
    # One class at step 3, so no coverage; two classes after the growth at step 3.
    assert "coverage" not in evaluations[0]
    assert len(evaluations[1]["coverage"]["classes"]) == 2
    assert {"fd_pixels@64", "kid_pixels@64", "coverage_tv@64"} <= set(evaluations[1]["eval"])


def test_trainer_resume_drops_later_evaluations(tmp_path, random_images):
    options = {"data.cache_dir": tmp_path / "cache", **EVAL_DURING_TRAINING, "eval.every": 2}
    first = Trainer(
        small_config(tmp_path / "run", 4, **options, **{"output.checkpoint_every": 2}), dataset=random_images
    )
    first.train()
    # Pretend the run died after step 4 but was resumed from step 2's checkpoint.
    (tmp_path / "run" / "checkpoints" / "step_0000004.safetensors").unlink()
    second = Trainer(small_config(tmp_path / "run", 4, **options), dataset=random_images)
    second.train(resume=True)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval" in r] == [2, 4]


runner = CliRunner()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A 4-step run on 600 Fashion-MNIST images with 2 classes at the end."""
    root = tmp_path_factory.mktemp("eval-run")
    run = root / "run"
    options = [
        "--set", "data.max_images=600", "--set", "embedder.kind=pixel",
        "--set", f"data.cache_dir={root / 'cache'}",
        "--set", "growth.unit=steps", "--set", "growth.milestones=[2]",
        "--set", "partition.num_classes=2",
        "--set", "model.generator_width=8", "--set", "model.discriminator_width=8",
        "--set", "device=cpu",
    ]
    result = runner.invoke(app, ["train", "--out", str(run), "--steps", "4", *options])
    assert result.exit_code == 0, result.output
    return run


SMALL_CLI_EVAL = [
    "--num-samples", "300", "--device", "cpu",
    "--set", "eval.kid_subsets=3", "--set", "eval.kid_subset_size=100",
    "--set", "eval.min_class_samples=50",
]


@needs_fashion_mnist
def test_cli_eval_prints_and_records(small_run):
    result = runner.invoke(app, ["eval", str(small_run), *SMALL_CLI_EVAL])
    assert result.exit_code == 0, result.output
    for name in ("fd_pixels@300", "kid_fmnist-classifier@300", "coverage_tv@300", "coverage of the 2 classes"):
        assert name in result.output
    record = json.loads((small_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 4
    assert record["checkpoint"].endswith("step_0000004.safetensors")
    assert set(record["feature_spaces"]) == {"pixels", "fmnist-classifier"}
    assert record["num_real"] == 600

    again = runner.invoke(app, ["eval", str(small_run), *SMALL_CLI_EVAL])
    assert again.exit_code == 0, again.output
    second = json.loads((small_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert second["eval"] == record["eval"]  # seeded, and the cached real statistics agree


@needs_fashion_mnist
def test_cli_eval_single_space_and_metric(small_run):
    result = runner.invoke(
        app, ["eval", str(small_run), *SMALL_CLI_EVAL, "--metric", "fd", "--feature-space", "pixels"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((small_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert list(record["eval"]) == ["fd_pixels@300"]


@needs_fashion_mnist
def test_cli_eval_fid_without_weights_names_file(small_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MDGAN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    result = runner.invoke(app, ["eval", str(small_run), *SMALL_CLI_EVAL, "--metric", "fid"])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "pt_inception-2015-12-05-6726825d.pth" in output
    assert "--inception-weights" in output


@needs_fashion_mnist
def test_cli_eval_rejects_unknown_metric(small_run):
    result = runner.invoke(app, ["eval", str(small_run), "--metric", "is"])
    assert result.exit_code == 2
    assert "eval.metrics" in result.output
