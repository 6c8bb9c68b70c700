"""Selector throughput: assignments per second against the memory-read bound.

    python benchmarks/bench_selector.py                # every selector, N in {2,4,8,64}, D in {512,768}
    python benchmarks/bench_selector.py --quick        # smaller batches only

Same measurement as ``mdgan bench selector``.
"""

from __future__ import annotations

import argparse

from _common import console, describe_machine, print_table, write_results

from mdgan.bench import bench_selectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="batches up to 16384 only")
    parser.add_argument("--output", help="JSON file (default benchmarks/results/selector.json)")
    args = parser.parse_args()

    machine = describe_machine()
    batches = (64, 1024, 16384) if args.quick else (64, 1024, 16384, 262144, 1048576)
    records = bench_selectors(batch_sizes=batches, device=args.device, progress=console.print)
    for record in records:
        record["M_per_second"] = record["per_second"] / 1e6
        record["bound_M_per_second"] = record["bound_per_second"] / 1e6
    print_table(
        "selector throughput",
        records,
        ["selector", "chosen", "num_classes", "dim", "batch", "M_per_second", "bound_M_per_second", "fraction_of_bound"],
    )
    target = [r for r in records if r["num_classes"] == 4 and r["dim"] == 512 and r["batch"] == max(batches)]
    summary = {}
    if target:
        by_kind = {r["selector"]: r for r in target}
        best = max(target, key=lambda r: r["per_second"])
        summary = {
            "best_selector": best["selector"],
            "best_fraction_of_bound": best["fraction_of_bound"],
            "best_over_faiss": best["per_second"] / by_kind["faiss"]["per_second"] if "faiss" in by_kind else None,
        }
        console.print(f"N=4, D=512, B={max(batches)}: {summary}")
    write_results("selector", machine, records, args.output, summary=summary)


if __name__ == "__main__":
    main()
