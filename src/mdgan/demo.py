"""Settings of ``mdgan demo``: the whole method on Fashion-MNIST at 32x32 in a few minutes."""

from __future__ import annotations

from pathlib import Path

__all__ = ["demo_overrides"]


def demo_overrides(out: str | Path, steps: int = 2400, device: str = "auto") -> list[str]:
    """Dotted overrides of the default configuration that make the demo run.

    Fashion-MNIST's 60,000 training images at 32x32, Ward on k-means micro-clusters (above
    10,000 images) into nested levels of 1, 2 and 4 classes, and growth from 1 to 2 discriminators at a third of
    ``steps`` and to 4 at two thirds. CLIP is used when its weights are available locally,
    pixels otherwise. The networks are half the DCGAN width, so 2,400 steps take a few minutes
    on two CPU cores.
    """
    if steps < 3:
        raise ValueError(f"the demo needs at least 3 steps to grow twice, got {steps}")
    first, second = steps // 3, 2 * steps // 3
    return [
        "data.source=fashion-mnist",
        "data.image_size=32",
        "embedder.kind=auto",
        "partition.method=ward",
        "partition.num_classes=4",
        "partition.max_exact_size=10000",
        "growth.kind=fixed",
        "growth.unit=steps",
        f"growth.milestones=[{first}, {second}]",
        "model.generator_width=32",
        "model.discriminator_width=32",
        f"optim.steps={steps}",
        f"output.dir={out}",
        f"output.log_every={max(1, min(50, steps // 30))}",
        f"output.sample_every={max(1, steps // 6)}",
        f"output.checkpoint_every={max(1, steps // 2)}",
        f"device={device}",
    ]
