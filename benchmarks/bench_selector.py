"""Selector throughput: assignments per second against the memory-read bound.

    python benchmarks/bench_selector.py                # every selector, N in {2,4,8,64}, D in {512,768}
    python benchmarks/bench_selector.py --quick        # smaller batches only
    python benchmarks/bench_selector.py --breakdown    # cost of each step, torch against the fused kernel

Same measurement as ``mdgan bench selector``.
"""

from __future__ import annotations

import argparse

from _common import console, describe_machine, print_table, write_results

from mdgan.bench import bench_selectors


def breakdown(rows: int = 1 << 20, dim: int = 512, classes: int = 4, chunk: int = 4096) -> list[dict]:
    """Measure TorchSelector's per-chunk steps, added one at a time, and the fused kernel.

    Every torch step is one more pass of torch operations over each cached chunk, so the drop
    from one line to the next is that step's cost. The fused kernel does all of them in one
    pass over each row. All lines are timed in turn, round after round, with the bound.
    """
    import torch

    from mdgan.bench import time_calls
    from mdgan.selectors import NumbaSelector, TorchSelector

    generator = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=1)
    means = torch.nn.functional.normalize(torch.randn(classes, dim, generator=generator), dim=1)
    half_norms = (0.5 * means.pow(2).sum(dim=1)).unsqueeze(0)

    def chunks(with_ranking: bool, with_norms: bool) -> None:
        for start in range(0, rows, chunk):
            block = features[start : start + chunk]
            scores = torch.addmm(half_norms, block, means.T, alpha=-1.0)
            if with_ranking:
                best, best_class = scores.min(dim=1)
                scores.scatter(1, best_class.unsqueeze(1), float("inf")).amin(dim=1)
            if with_norms:
                torch.linalg.vector_norm(block, dim=1)

    torch_selector = TorchSelector(chunk_size=chunk).fit(means)
    numba_selector = NumbaSelector().fit(means)
    steps = {
        "read once (sum)": lambda: features.sum(),
        "scores (addmm), whole batch": lambda: torch.addmm(half_norms, features, means.T, alpha=-1.0),
        "scores, chunked": lambda: chunks(False, False),
        "scores + two smallest": lambda: chunks(True, False),
        "scores + norms": lambda: chunks(False, True),
        "scores + two smallest + norms": lambda: chunks(True, True),
        "TorchSelector.select (all of it)": lambda: torch_selector.select(features),
        "fused kernel: scores, two smallest, norms, near ties": lambda: numba_selector._rank(features),
        "NumbaSelector.select (all of it)": lambda: numba_selector.select(features),
    }
    seconds = time_calls(steps, features.device)
    bound = seconds["read once (sum)"]
    records = []
    for name, elapsed in seconds.items():
        records.append({"steps": name, "M_per_second": rows / elapsed / 1e6, "fraction_of_bound": bound / elapsed})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="batches up to 16384 only")
    parser.add_argument("--breakdown", action="store_true", help="time each step at N=4, D=512, B=1M")
    parser.add_argument("--output", help="JSON file (default benchmarks/results/selector.json)")
    args = parser.parse_args()

    machine = describe_machine()
    if args.breakdown:
        records = breakdown()
        print_table("selector steps, N=4, D=512, 1M vectors", records, ["steps", "M_per_second", "fraction_of_bound"])
        write_results("selector_breakdown", machine, records, args.output)
        return
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
            "best_selector": best["selector"] if best["selector"] != "auto" else f"auto ({best['chosen']})",
            "best_fraction_of_bound": best["fraction_of_bound"],
            "best_over_faiss": best["per_second"] / by_kind["faiss"]["per_second"] if "faiss" in by_kind else None,
        }
        over_faiss = f", {summary['best_over_faiss']:.1f}x FAISS" if summary["best_over_faiss"] else ""
        console.print(
            f"N=4, D=512, B={max(batches)}: best {summary['best_selector']} at "
            f"{summary['best_fraction_of_bound']:.0%} of the memory-read bound{over_faiss}"
        )
    write_results("selector", machine, records, args.output, summary=summary)


if __name__ == "__main__":
    main()
