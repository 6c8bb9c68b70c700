"""Discriminator bank cost: one training step with 4 routed discriminators against 1.

    python benchmarks/bench_bank.py                  # DCGAN 32x32x3, width 64, batch 64
    python benchmarks/bench_bank.py --size 64 --device cuda
    python benchmarks/bench_bank.py --steps 2 --warmup 1   # operator counts only, quickly

A step is what ``Trainer.train_step`` does after routing: generate a batch, update the
discriminators on real and generated images, then update the generator. Routing itself
(embedding generated images) is measured by bench_routing.py, so here every generated image
gets a fixed, uniformly drawn class. The same generator, networks and batch are used for 1 and
4 discriminators, and their steps are taken in turn. The ratio of their median step times is
the cost of the bank, and the quartiles of the step-by-step ratios show its spread. The
vmapped bank is measured against one discriminator without batch normalisation, which it
requires.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
from _common import console, describe_machine, print_table, write_results

from mdgan.build import resolve_device
from mdgan.discriminators import RoutedDiscriminatorBank, VmappedDiscriminatorBank
from mdgan.networks import DCGANDiscriminator, DCGANGenerator


def make_step(bank_class, norm, num_discriminators, args, device):
    """Return one training step, as a function, for a bank of ``num_discriminators``."""
    torch.manual_seed(0)
    generator = DCGANGenerator(100, args.size, 3, args.width).to(device)
    # foreach=True: the multi-tensor Adam that PyTorch uses by default on CUDA, so that the
    # operator counts below are those of a GPU step on any device.
    g_optimizer = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999), foreach=True)
    bank = bank_class(
        partial(DCGANDiscriminator, args.size, 3, args.width, norm),
        partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999), foreach=True),
        1,
    ).to(device)
    if num_discriminators > 1:
        bank.grow([0] * num_discriminators)
    real = torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1
    classes = torch.randint(0, num_discriminators, (args.batch,), device=device)
    real_classes = torch.randint(0, num_discriminators, (args.batch,), device=device)

    def step() -> None:
        fake = generator(torch.randn(args.batch, 100, device=device))
        bank.zero_grad()
        bank.discriminator_loss(real, real_classes, fake.detach(), classes).total.backward()
        bank.step()
        bank.requires_grad_(False)
        g_optimizer.zero_grad(set_to_none=True)
        bank.generator_loss(fake, classes).total.backward()
        g_optimizer.step()
        bank.requires_grad_(True)

    return step


def timed(step, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def operator_calls(step) -> dict[str, int]:
    """Count the tensor operations that one step dispatches to the backend, forward and backward.

    On a GPU nearly every one of them is a kernel launch. With small sub-batches the launches,
    not the arithmetic, set the step time there, so these counts, taken on any device, show
    whether a bank can hold its ratio on a GPU. Views (metadata only) and profiler
    markers are not counted; ``convolutions`` counts forward and backward convolutions.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    counts = {"operators": 0, "convolutions": 0}

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket)
            if not func.is_view and not name.startswith("profiler."):
                counts["operators"] += 1
                counts["convolutions"] += name in ("aten.convolution", "aten.convolution_backward")
            return func(*args, **(kwargs or {}))

    with Counter():
        step()
    return counts


def compare(one_step, four_step, args, device) -> tuple[float, float, list[float]]:
    """Return the median step times of both banks, their steps taken in turn, and each pair's ratio.

    Taking the steps in turn gives both banks the same state of the machine. On a virtual
    machine the speed of memory can change by a factor of two within a minute.
    """
    for _ in range(args.warmup):
        one_step()
        four_step()
    ones, fours = [], []
    for _ in range(args.steps):
        ones.append(timed(one_step, device))
        fours.append(timed(four_step, device))
    return statistics.median(ones), statistics.median(fours), [f / o for o, f in zip(ones, fours)]


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, choices=(32, 64))
    parser.add_argument("--width", type=positive, default=64)
    parser.add_argument("--batch", type=positive, default=64)
    parser.add_argument("--steps", type=positive, default=40, help="timed steps of each bank (median reported)")
    parser.add_argument("--warmup", type=positive, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", help="JSON file (default benchmarks/results/bank.json)")
    args = parser.parse_args()

    try:
        device = resolve_device(args.device)
    except RuntimeError as error:
        parser.error(str(error))
    machine = describe_machine()
    records = []
    for name, bank_class, norm in [
        ("routed", RoutedDiscriminatorBank, "batch"),
        ("routed", RoutedDiscriminatorBank, "none"),
        ("vmapped", VmappedDiscriminatorBank, "none"),
    ]:
        # The reference for every bank is the routed loop with one discriminator of the same norm.
        one_step = make_step(RoutedDiscriminatorBank, norm, 1, args, device)
        four_step = make_step(bank_class, norm, 4, args, device)
        one_seconds, four_seconds, pair_ratios = compare(one_step, four_step, args, device)
        quartiles = statistics.quantiles(pair_ratios, n=4)
        record = {
            "bank": name,
            "norm": norm,
            "size": args.size,
            "batch": args.batch,
            "one_d_ms": one_seconds * 1e3,
            "four_d_ms": four_seconds * 1e3,
            "ratio": four_seconds / one_seconds,
            "pair_ratio_quartiles": [quartiles[0], quartiles[2]],
            "one_d_calls": operator_calls(one_step),
            "four_d_calls": operator_calls(four_step),
            "device": str(device),
        }
        records.append(record)
        console.print(
            f"{name} bank, {norm} norm: 1 D {record['one_d_ms']:.0f} ms, 4 D {record['four_d_ms']:.0f} ms, "
            f"ratio {record['ratio']:.2f}"
        )
    rows = []
    for record in records:
        row = dict(record, ratio_q1_q3="{:.2f}-{:.2f}".format(*record["pair_ratio_quartiles"]))
        for bank in ("one_d", "four_d"):
            row[f"{bank}_ops_convs"] = "{operators}/{convolutions}".format(**record[f"{bank}_calls"])
        rows.append(row)
    print_table("training step, 4 discriminators vs 1", rows,
                ["bank", "norm", "size", "batch", "one_d_ms", "four_d_ms", "ratio", "ratio_q1_q3",
                 "one_d_ops_convs", "four_d_ops_convs"])
    write_results("bank", machine, records, args.output)


if __name__ == "__main__":
    main()
