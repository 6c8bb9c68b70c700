"""Ward at scale: micro-cluster Ward on a million features, and its agreement with exact Ward.

    python benchmarks/bench_ward.py scale --num 1000000 --dim 512
    python benchmarks/bench_ward.py agreement --num 20000
    python benchmarks/bench_ward.py stability --num 20000

``scale`` times ``WardPartitioner(8, algorithm="microclusters")`` on synthetic unit-norm
features (a mixture of 32 anisotropic Gaussians, the shape CLIP features take) and reports
the peak memory beyond the features (Linux VmHWM, reset after the features are built).

``agreement`` compares exact and micro-cluster Ward on 20,000-point sets, as the adjusted
Rand index of the binary levels with 2, 4 and 8 classes. The sets are Fashion-MNIST pixel
features, the synthetic mixture, and structureless Gaussian noise. Noise is the hardest case,
because Ward's top splits are arbitrary there.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _common import console, describe_machine, print_table, write_results
from sklearn.metrics import adjusted_rand_score

from mdgan.partitioners import WardPartitioner


def mixture(num: int, dim: int, seed: int = 0, components: int = 32, chunk: int = 65536) -> torch.Tensor:
    """Unit-norm features from a mixture of anisotropic Gaussians, built chunk by chunk."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(components, dim, generator=generator)
    scales = torch.rand(components, dim, generator=generator) * 0.8 + 0.2
    weights = torch.rand(components, generator=generator) + 0.2
    features = torch.empty(num, dim)
    for start in range(0, num, chunk):
        rows = min(chunk, num - start)
        owner = torch.multinomial(weights, rows, replacement=True, generator=generator)
        block = centres[owner] + scales[owner] * torch.randn(rows, dim, generator=generator)
        features[start : start + rows] = torch.nn.functional.normalize(block, dim=1)
    return features


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def run_scale(args) -> list[dict]:
    features = mixture(args.num, args.dim)
    features_gb = features.numel() * 4 / 2**30
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM)
    baseline_kb = _status_kb("VmRSS")
    started = time.perf_counter()
    partitioner = WardPartitioner(8, algorithm="microclusters", num_microclusters=args.microclusters)
    partition = partitioner.fit(features)
    seconds = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM")
    sizes = [partition.class_sizes(level).tolist() for level in range(partition.num_levels)]
    return [{
        "num": args.num,
        "dim": args.dim,
        "microclusters": args.microclusters,
        "seconds": seconds,
        "features_gb": features_gb,
        "peak_beyond_features_gb": (peak_kb - baseline_kb) / 2**20,
        "level_sizes": sizes,
    }]


def fashion_pixels(num: int) -> torch.Tensor:
    from mdgan.data import load_fashion_mnist
    from mdgan.embedders import PixelEmbedder

    dataset = load_fashion_mnist(None, "train", 32, 1, download=False, cache_dir=None, max_images=num)
    return PixelEmbedder(size=8, channels=1).embed_images(dataset.batch(np.arange(len(dataset))))


def run_agreement(args) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    sets = {
        "fashion-mnist pixels 8x8 (64-d)": lambda: fashion_pixels(args.num),
        "gaussian mixture (512-d)": lambda: mixture(args.num, 512, seed=1),
        "gaussian noise (512-d)": lambda: torch.randn(args.num, 512, generator=generator),
    }
    records = []
    for name, make in sets.items():
        features = make()
        started = time.perf_counter()
        exact = WardPartitioner(8, algorithm="exact", max_exact_size=args.num).fit(features)
        exact_seconds = time.perf_counter() - started
        for microclusters in args.microclusters_list:
            started = time.perf_counter()
            micro = WardPartitioner(8, algorithm="microclusters", num_microclusters=microclusters).fit(features)
            record = {
                "features": name,
                "num": args.num,
                "microclusters": microclusters,
                "exact_seconds": exact_seconds,
                "micro_seconds": time.perf_counter() - started,
            }
            for level, classes in ((1, 2), (2, 4), (3, 8)):
                record[f"ari@{classes}"] = adjusted_rand_score(exact.labels[level], micro.labels[level])
            records.append(record)
            console.print(record)
    return records


def run_stability(args) -> list[dict]:
    """Agreement of exact Ward with itself after dropping 1% of the points at random.

    This is the ceiling for any approximation: where exact Ward on 99% of a set disagrees
    with exact Ward on all of it, no faster method can be expected to agree better.
    """
    sets = {
        "fashion-mnist pixels 8x8 (64-d)": lambda: fashion_pixels(args.num),
        "gaussian mixture (512-d)": lambda: mixture(args.num, 512, seed=1),
    }
    records = []
    rng = np.random.default_rng(0)
    for name, make in sets.items():
        features = make()
        full = WardPartitioner(8, algorithm="exact", max_exact_size=args.num).fit(features)
        kept = np.sort(rng.choice(args.num, int(args.num * 0.99), replace=False))
        subset = WardPartitioner(8, algorithm="exact", max_exact_size=args.num).fit(features[torch.as_tensor(kept)])
        record = {"features": name, "num": args.num, "kept": len(kept)}
        for level, classes in ((1, 2), (2, 4), (3, 8)):
            record[f"ari@{classes}"] = adjusted_rand_score(full.labels[level][kept], subset.labels[level])
        records.append(record)
        console.print(record)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("scale", "agreement", "stability"))
    parser.add_argument("--num", type=int, default=None, help="points (default 1,000,000 / 20,000)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--microclusters", type=int, default=2048)
    parser.add_argument("--microclusters-list", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--output", help="JSON file (default benchmarks/results/ward_MODE.json)")
    args = parser.parse_args()
    machine = describe_machine()
    if args.mode == "scale":
        args.num = args.num or 1_000_000
        records = run_scale(args)
        print_table("micro-cluster Ward", records,
                    ["num", "dim", "microclusters", "seconds", "features_gb", "peak_beyond_features_gb"])
    elif args.mode == "stability":
        args.num = args.num or 20_000
        records = run_stability(args)
        print_table("exact Ward on 99% of the points against all of them (adjusted Rand index)", records,
                    ["features", "num", "kept", "ari@2", "ari@4", "ari@8"])
    else:
        args.num = args.num or 20_000
        records = run_agreement(args)
        print_table("agreement with exact Ward (adjusted Rand index)", records,
                    ["features", "microclusters", "exact_seconds", "micro_seconds", "ari@2", "ari@4", "ari@8"])
    write_results(f"ward_{args.mode}", machine, records, args.output)


if __name__ == "__main__":
    main()
