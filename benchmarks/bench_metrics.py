"""Sample-size bias of the Fréchet distance and KID, on real Fashion-MNIST images.

    python benchmarks/bench_metrics.py

The first N of Fashion-MNIST's 10,000 test images are compared with the statistics of its
60,000 training images, in the pixel and classifier feature spaces. Both sets come from one
distribution, so the true distance is close to 0 and the measured FD is almost all bias.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import console, describe_machine, print_table, write_results

from mdgan.config import TrainConfig
from mdgan.data import load_fashion_mnist
from mdgan.evaluation import build_feature_space
from mdgan.metrics import feature_statistics, frechet_distance, kid, real_statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    parser.add_argument("--output", help="JSON file (default benchmarks/results/metrics_bias.json)")
    args = parser.parse_args()

    machine = describe_machine()
    train = load_fashion_mnist(None, "train", 32, 1, download=False, cache_dir=None, max_images=None)
    test = load_fashion_mnist(None, "test", 32, 1, download=False, cache_dir=None, max_images=None)
    records = []
    for name in ("pixels", "fmnist-classifier"):
        space = build_feature_space(name, channels=1, config=TrainConfig())
        real = real_statistics(train, space)
        with torch.no_grad():
            features = torch.cat([
                space.extract(test.batch(np.arange(start, min(start + 500, len(test)))))
                for start in range(0, max(args.counts), 500)
            ]).double().numpy()
        for count in args.counts:
            mean, covariance = feature_statistics(features[:count])
            kid_mean, kid_std = kid(real.kid_features, features[:count], subset_size=min(1000, count))
            records.append({
                "space": name,
                "test_images": count,
                "fd": frechet_distance(mean, covariance, real.mean, real.covariance),
                "kid": kid_mean,
                "kid_std": kid_std,
            })
            console.print(records[-1])
    print_table("FD and KID of real test images against the training set", records,
                ["space", "test_images", "fd", "kid", "kid_std"])
    write_results("metrics_bias", machine, records, args.output)


if __name__ == "__main__":
    main()
