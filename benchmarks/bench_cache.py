"""Caches and data loading: feature-cache reuse, rebuild on change, and data time per step.

    python benchmarks/bench_cache.py features --images 1000     # CLIP ViT-B-32 (random weights)
    python benchmarks/bench_cache.py rebuild
    python benchmarks/bench_cache.py loading --steps 300

``features`` embeds the same Fashion-MNIST images twice into an empty cache directory and
reports both times. ``rebuild`` decodes and embeds a folder of faces, rewrites one image and
checks that the second load decodes and embeds again. ``loading`` runs the demo's trainer and
reports the share of each step spent fetching the real batch.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import console, describe_machine, print_table, write_results

from mdgan.data import load_fashion_mnist, load_image_folder
from mdgan.embedders import OpenClipEmbedder, PixelEmbedder
from mdgan.features import compute_features


def run_features(args) -> list[dict]:
    dataset = load_fashion_mnist(None, "train", 32, 1, download=False, cache_dir=None, max_images=args.images)
    records = []
    for name, embedder in [
        ("pixels 8x8", PixelEmbedder(8, 1)),
        (f"clip {args.model} (random weights)", OpenClipEmbedder(args.model, pretrained=None)),
    ]:
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            first = compute_features(dataset, embedder, 64, cache_dir=cache)
            first_seconds = time.perf_counter() - started
            started = time.perf_counter()
            second = compute_features(dataset, embedder, 64, cache_dir=cache)
            second_seconds = time.perf_counter() - started
        records.append({
            "embedder": name,
            "images": len(dataset),
            "first_seconds": first_seconds,
            "second_seconds": second_seconds,
            "speedup": first_seconds / second_seconds,
            "identical": bool((first == second).all()),
        })
        console.print(records[-1])
    return records


def run_rebuild(args) -> list[dict]:
    from PIL import Image
    from skimage.data import lfw_subset

    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as cache:
        root = Path(folder)
        for index, face in enumerate(lfw_subset()[:100]):
            Image.fromarray((face * 255).astype(np.uint8)).save(root / f"{index:03d}.png")
        embedder = PixelEmbedder(8, 1)
        cache_path = Path(cache)

        def load() -> tuple[float, set[str]]:
            started = time.perf_counter()
            dataset = load_image_folder(root, 32, 1, None, cache_path, None)
            compute_features(dataset, embedder, 64, cache_dir=cache_path / "features")
            return time.perf_counter() - started, {p.name for p in (cache_path / "features").iterdir()}

        first_seconds, first_files = load()
        same_seconds, same_files = load()
        changed = np.zeros((25, 25), dtype=np.uint8)
        Image.fromarray(changed).save(root / "000.png")
        changed_seconds, changed_files = load()
        return [{
            "images": 100,
            "first_seconds": first_seconds,
            "unchanged_seconds": same_seconds,
            "unchanged_reused": same_files == first_files,
            "after_change_seconds": changed_seconds,
            "after_change_rebuilt": len(changed_files - first_files) == 1,
        }]


def run_loading(args) -> list[dict]:
    from mdgan.config import load_config
    from mdgan.demo import demo_overrides
    from mdgan.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        overrides = demo_overrides(out, steps=args.steps, device="cpu")
        overrides += [f"output.sample_every={args.steps * 10}", f"output.checkpoint_every={args.steps * 10}"]
        trainer = Trainer(load_config(None, overrides))
        trainer.prepare()
        totals = {"data": 0.0, "step": 0.0}
        original_batch, original_step = trainer._real_batch, trainer.train_step

        def timed_batch():
            started = time.perf_counter()
            result = original_batch()
            totals["data"] += time.perf_counter() - started
            return result

        def timed_step(real, classes):
            started = time.perf_counter()
            result = original_step(real, classes)
            totals["step"] += time.perf_counter() - started
            return result

        trainer._real_batch, trainer.train_step = timed_batch, timed_step
        trainer.train()
    return [{
        "steps": args.steps,
        "data_ms_per_step": totals["data"] / args.steps * 1e3,
        "train_ms_per_step": totals["step"] / args.steps * 1e3,
        "data_share": totals["data"] / (totals["data"] + totals["step"]),
    }]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("features", "rebuild", "loading"))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--output", help="JSON file (default benchmarks/results/cache_MODE.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    machine = describe_machine()
    records = {"features": run_features, "rebuild": run_rebuild, "loading": run_loading}[args.mode](args)
    print_table(f"cache: {args.mode}", records, list(records[0]))
    write_results(f"cache_{args.mode}", machine, records, args.output)


if __name__ == "__main__":
    main()
