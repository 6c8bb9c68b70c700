"""Routing throughput: generated images through embedder and selector, against raw encode_image.

    python benchmarks/bench_routing.py                      # ViT-B-32, 32x32 and 64x64, batch 64
    python benchmarks/bench_routing.py --model ViT-S-32 --batch 32

The open_clip model has random weights; speed does not depend on them. Same measurement as
``mdgan bench routing``.
"""

from __future__ import annotations

import argparse

from _common import console, describe_machine, print_table, write_results

from mdgan.bench import bench_routing
from mdgan.build import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", help="JSON file (default benchmarks/results/routing.json)")
    args = parser.parse_args()

    machine = describe_machine()
    records = bench_routing(
        args.model, batch_size=args.batch, device=resolve_device(args.device), repeats=args.repeats,
        progress=console.print,
    )
    print_table(
        "routing throughput (images/s)",
        records,
        ["model", "image_size", "batch", "raw_encode_per_second", "routed_per_second", "ratio"],
    )
    write_results("routing", machine, records, args.output)


if __name__ == "__main__":
    main()
