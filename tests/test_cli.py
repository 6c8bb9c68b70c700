import json

from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import needs_fashion_mnist
from mdgan.cli import app

runner = CliRunner()

SMALL_DATA = ["--set", "data.max_images=600", "--set", "embedder.kind=pixel"]


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("embed", "partition", "train", "sample", "eval", "demo"):
        assert command in result.output


def test_invalid_override_exits_with_field(tmp_path):
    result = runner.invoke(app, ["embed", "--out", str(tmp_path / "f.safetensors"), "--set", "optim.lr_g=-1"])
    assert result.exit_code == 2
    assert "optim.lr_g" in result.output


@needs_fashion_mnist
def test_embed_then_partition(tmp_path):
    features = tmp_path / "features.safetensors"
    result = runner.invoke(app, ["embed", "--out", str(features), *SMALL_DATA])
    assert result.exit_code == 0, result.output
    assert load_file(str(features))["features"].shape == (600, 64)

    out = tmp_path / "partition"
    result = runner.invoke(app, ["partition", "--out", str(out), "--features", str(features), *SMALL_DATA])
    assert result.exit_code == 0, result.output
    assert "level 2: 4 classes" in result.output
    summary = json.loads((out / "partition.json").read_text())
    assert [len(level["classes"]) for level in summary["levels"]] == [1, 2, 4]
    assert (out / "level_2.png").is_file()


@needs_fashion_mnist
def test_partition_rejects_mismatched_features(tmp_path):
    features = tmp_path / "features.safetensors"
    runner.invoke(app, ["embed", "--out", str(features), *SMALL_DATA])
    result = runner.invoke(
        app,
        ["partition", "--out", str(tmp_path / "p"), "--features", str(features),
         "--set", "data.max_images=500", "--set", "embedder.kind=pixel"],
    )
    assert result.exit_code == 1
    assert "600 feature rows but the dataset has 500 images" in result.output


@needs_fashion_mnist
def test_train_resume_and_sample(tmp_path):
    run = tmp_path / "run"
    options = [
        *SMALL_DATA,
        "--set", "growth.unit=steps",
        "--set", "growth.milestones=[2, 4]",
        "--set", "model.generator_width=8",
        "--set", "model.discriminator_width=8",
        "--set", "output.checkpoint_every=3",
    ]
    result = runner.invoke(app, ["train", "--out", str(run), "--steps", "3", *options])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--out", str(run), "--steps", "6", "--resume", *options])
    assert result.exit_code == 0, result.output
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 6
    assert sorted(path.name for path in (run / "checkpoints").glob("*.safetensors")) == [
        "step_0000003.safetensors",
        "step_0000006.safetensors",
    ]

    grid = tmp_path / "grid.png"
    result = runner.invoke(app, ["sample", str(run), "--out", str(grid), "--num", "9", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert grid.is_file()
    folder = tmp_path / "images"
    result = runner.invoke(app, ["sample", str(run), "--out", str(folder), "--num", "3", "--files", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in folder.iterdir()) == ["00000.png", "00001.png", "00002.png"]


def test_sample_without_checkpoint(tmp_path):
    result = runner.invoke(app, ["sample", str(tmp_path), "--out", str(tmp_path / "grid.png")])
    assert result.exit_code == 1
    assert "no checkpoint" in result.output


def test_train_with_local_clip_on_faces(tmp_path, clip_checkpoint, lfw_folder):
    checkpoint, _ = clip_checkpoint
    run = tmp_path / "faces"
    result = runner.invoke(
        app,
        [
            "train", "--out", str(run), "--steps", "4",
            "--set", "data.source=folder",
            "--set", f"data.path={lfw_folder}",
            "--set", "data.channels=3",
            "--set", "embedder.kind=auto",
            "--set", "embedder.clip_model=ViT-S-32",
            "--set", f"embedder.clip_pretrained={checkpoint}",
            "--set", "partition.num_classes=2",
            "--set", "growth.unit=steps",
            "--set", "growth.milestones=[2]",
            "--set", "optim.batch_size=16",
            "--set", "model.generator_width=8",
            "--set", "model.discriminator_width=8",
            "--set", "output.log_every=1",
            "--set", "device=cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "clip(ViT-S-32" in result.output
    summary = json.loads((run / "partition" / "partition.json").read_text())
    assert summary["num_images"] == 100
    assert summary["embedder"].startswith("clip(ViT-S-32")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["num_discriminators"] for r in records] == [1, 1, 2, 2]
    assert sum(records[-1]["fake_per_d"]) == 16


def test_prompts_need_a_text_embedder(tmp_path, lfw_folder):
    result = runner.invoke(
        app,
        [
            "partition", "--out", str(tmp_path / "p"),
            "--set", "data.source=folder",
            "--set", f"data.path={lfw_folder}",
            "--set", "embedder.kind=pixel",
            "--set", "partition.method=prompts",
            "--set", "partition.prompts=[man, woman]",
        ],
    )
    assert result.exit_code == 1
    assert "needs an embedder that embeds text" in result.output


def test_bench_selector_writes_every_kind(tmp_path):
    output = tmp_path / "selector.json"
    result = runner.invoke(
        app, ["bench", "selector", "--classes", "4", "--dim", "16", "--batch", "256", "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(output.read_text())
    assert payload["machine"]["cores"] >= 1
    kinds = [record["selector"] for record in payload["records"]]
    assert kinds == ["torch", "faiss", "numba", "auto"]
    for record in payload["records"]:
        assert record["per_second"] > 0
        assert record["bound_per_second"] > 0


def test_bench_routing_compares_with_raw_encoder(tmp_path):
    output = tmp_path / "routing.json"
    result = runner.invoke(
        app,
        ["bench", "routing", "--model", "ViT-S-32", "--batch", "2", "--repeats", "1", "--device", "cpu",
         "--output", str(output)],
    )
    assert result.exit_code == 0, result.output
    records = json.loads(output.read_text())["records"]
    assert [record["image_size"] for record in records] == [32, 64]
    for record in records:
        assert record["ratio"] > 0


def test_resume_without_checkpoint_fails_fast(tmp_path):
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "none"), "--resume"])
    assert result.exit_code == 1
    assert "drop --resume" in result.output


def test_missing_clip_file_is_a_clean_error(tmp_path, lfw_folder):
    result = runner.invoke(
        app,
        ["train", "--out", str(tmp_path / "run"), "--steps", "2",
         "--set", "data.source=folder", "--set", f"data.path={lfw_folder}",
         "--set", "embedder.kind=clip", "--set", f"embedder.clip_pretrained={tmp_path / 'nope.safetensors'}"],
    )
    assert result.exit_code == 1
    assert "CLIP checkpoint file not found" in result.output
    assert "embedder.clip_pretrained" in result.output


@needs_fashion_mnist
def test_embed_reuses_feature_cache(tmp_path):
    cache = tmp_path / "cache"
    options = [*SMALL_DATA, "--set", f"data.cache_dir={cache}"]
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    assert runner.invoke(app, ["embed", "--out", str(first), *options]).exit_code == 0
    cached = sorted((cache / "features").iterdir())
    assert len(cached) == 1
    assert runner.invoke(app, ["embed", "--out", str(second), *options]).exit_code == 0
    assert sorted((cache / "features").iterdir()) == cached
    assert (load_file(str(first))["features"] == load_file(str(second))["features"]).all()


def test_bench_selector_rejects_bad_options():
    for arguments, message in [
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--classes", "0"], "--classes"),
        (["--batch", "0"], "--batch"),
    ]:
        result = runner.invoke(app, ["bench", "selector", "--dim", "8", *arguments])
        assert result.exit_code != 0
        assert message in result.output
