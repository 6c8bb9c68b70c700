import json

import pytest
import torch

from mdgan.config import load_config
from mdgan.trainer import Trainer


def small_config(out, steps, **extra):
    overrides = [
        f"output.dir={out}",
        f"optim.steps={steps}",
        "optim.batch_size=32",
        "embedder.kind=pixel",
        "embedder.pixel_size=4",
        "partition.num_classes=4",
        "growth.unit=steps",
        "growth.milestones=[3, 7]",
        "model.latent_dim=16",
        "model.generator_width=8",
        "model.discriminator_width=8",
        "output.log_every=1",
        "output.sample_every=1000",
        "output.checkpoint_every=1000",
        "output.num_samples=4",
        "output.preview_per_class=2",
        "device=cpu",
        "seed=3",
    ]
    overrides += [f"{key}={value}" for key, value in extra.items()]
    return load_config(None, overrides)


def trainer_state(trainer):
    state = {f"generator.{k}": v for k, v in trainer.generator.state_dict().items()}
    for index, discriminator in enumerate(trainer.bank.discriminators):
        state.update({f"d{index}.{k}": v for k, v in discriminator.state_dict().items()})
    for index, optimizer in enumerate(trainer.bank.optimizers + [trainer.g_optimizer]):
        for param_id, values in optimizer.state_dict()["state"].items():
            state.update({f"opt{index}.{param_id}.{k}": v for k, v in values.items()})
    return state


def test_resume_equals_uninterrupted(tmp_path, random_images):
    steps = 5
    whole = Trainer(small_config(tmp_path / "whole", 2 * steps), dataset=random_images)
    whole.train()

    first = Trainer(small_config(tmp_path / "split", steps), dataset=random_images)
    first.train()
    assert first.bank.num_discriminators == 2

    second = Trainer(small_config(tmp_path / "split", 2 * steps), dataset=random_images)
    second.train(resume=True)
    assert second.step == 2 * steps
    assert second.bank.num_discriminators == 4

    expected, actual = trainer_state(whole), trainer_state(second)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name

    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 2 * steps + 1))


def test_metrics_records(tmp_path, random_images):
    trainer = Trainer(small_config(tmp_path / "run", 9), dataset=random_images)
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        for key in ("step", "num_discriminators", "loss_g", "loss_d", "real_per_d", "fake_per_d", "seconds"):
            assert key in record
        assert len(record["loss_d"]) == record["num_discriminators"]
        assert sum(record["real_per_d"]) == 32 * record["steps"]
        assert sum(record["fake_per_d"]) == 32 * record["steps"]
    assert [r["num_discriminators"] for r in records] == [1, 1, 1, 2, 2, 2, 2, 4, 4]


def test_run_directory_layout(tmp_path, random_images):
    trainer = Trainer(small_config(tmp_path / "run", 9), dataset=random_images)
    run = trainer.train()
    assert (run / "config.yaml").is_file()
    assert (run / "partition" / "partition.safetensors").is_file()
    assert (run / "partition" / "partition.json").is_file()
    for level, classes in enumerate([1, 2, 4]):
        assert (run / "partition" / f"level_{level}.png").is_file()
        for class_index in range(classes):
            assert (run / "partition" / f"level_{level}" / f"class_{class_index}.png").is_file()
    sample_levels = {path.name.split("_level")[1][0] for path in (run / "samples").glob("*.png")}
    assert sample_levels == {"0", "1", "2"}
    checkpoints = sorted((run / "checkpoints").glob("*.safetensors"))
    assert [path.name for path in checkpoints] == ["step_0000009.safetensors"]
    assert (run / "checkpoints" / "step_0000009.json").is_file()


def test_seeded_runs_are_identical(tmp_path, random_images):
    first = Trainer(small_config(tmp_path / "a", 4), dataset=random_images)
    first.train()
    second = Trainer(small_config(tmp_path / "b", 4), dataset=random_images)
    second.train()
    for name, value in trainer_state(first).items():
        assert torch.equal(value, trainer_state(second)[name]), name


def test_schedule_beyond_partition_is_an_error(tmp_path, random_images):
    config = small_config(tmp_path / "run", 4, **{"partition.num_classes": 2})
    with pytest.raises(ValueError, match="growth schedule reaches level 2"):
        Trainer(config, dataset=random_images).prepare()


def test_resume_without_checkpoint_is_an_error(tmp_path, random_images):
    trainer = Trainer(small_config(tmp_path / "empty", 4), dataset=random_images)
    with pytest.raises(FileNotFoundError, match="cannot resume: .*empty not found"):
        trainer.train(resume=True)


def test_constant_schedule_starts_with_all_discriminators(tmp_path, random_images):
    config = small_config(tmp_path / "run", 3, **{"growth.kind": "constant", "growth.level": 2})
    trainer = Trainer(config, dataset=random_images)
    trainer.train()
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["num_discriminators"] == 4


def test_documented_custom_embedder_trains(tmp_path, random_images):
    from mdgan import Embedder

    class HistogramEmbedder(Embedder):  # the example of docs/components.md
        feature_dim = 16

        def embed_images(self, images):
            grey = images.float().mean(dim=1).clamp(-1, 1).flatten(1)
            bins = ((grey + 1) / 2 * 15.999).long()
            return torch.nn.functional.one_hot(bins, 16).float().mean(dim=1)

        def describe(self):
            return "grey-histogram(16)"

    trainer = Trainer(small_config(tmp_path / "run", 8), dataset=random_images, embedder=HistogramEmbedder())
    trainer.train()
    summary = json.loads((tmp_path / "run" / "partition" / "partition.json").read_text())
    assert summary["embedder"] == "grey-histogram(16)"
    assert trainer.bank.num_discriminators == 4


def test_vmapped_bank_trains_like_routed(tmp_path, random_images):
    settings = {"model.discriminator_norm": "none"}
    routed = Trainer(small_config(tmp_path / "routed", 9, **settings), dataset=random_images)
    routed.train()
    vmapped = Trainer(
        small_config(tmp_path / "vmapped", 9, **settings, **{"model.discriminator_bank": "vmapped"}),
        dataset=random_images,
    )
    vmapped.train()
    assert type(vmapped.bank).__name__ == "VmappedDiscriminatorBank"
    assert vmapped.bank.num_discriminators == 4
    # Equal up to float rounding, which Adam amplifies over steps (a bank step alone agrees
    # to 1e-5, see test_discriminators.py), so weights are compared by relative norm.
    expected, actual = trainer_state(routed), trainer_state(vmapped)
    weights = [name for name in expected if not name.startswith("opt")]
    for name in weights:
        value = expected[name]
        difference = (value.float() - actual[name].float()).norm()
        assert difference <= 1e-2 * value.float().norm() + 1e-6, name


def test_new_run_in_used_directory_is_an_error(tmp_path, random_images):
    from mdgan.trainer import RunDirectoryExistsError

    Trainer(small_config(tmp_path / "run", 2), dataset=random_images).train()
    with pytest.raises(RunDirectoryExistsError, match="already contains a run"):
        Trainer(small_config(tmp_path / "run", 2), dataset=random_images).train()
    replaced = Trainer(small_config(tmp_path / "run", 3, **{"output.overwrite": "true"}), dataset=random_images)
    replaced.train()
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("*.safetensors")] == ["step_0000003.safetensors"]


def test_resume_past_the_end_is_an_error(tmp_path, random_images):
    Trainer(small_config(tmp_path / "run", 4), dataset=random_images).train()
    with pytest.raises(ValueError, match="already at step 4"):
        Trainer(small_config(tmp_path / "run", 4), dataset=random_images).train(resume=True)


def test_checkpoint_files_follow_umask(tmp_path, random_images):
    import os

    Trainer(small_config(tmp_path / "run", 2), dataset=random_images).train()
    umask = os.umask(0)
    os.umask(umask)
    for path in (tmp_path / "run").rglob("*.safetensors"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
