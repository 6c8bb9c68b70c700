"""Discriminator bank cost: one training step with 4 routed discriminators against 1.

    python benchmarks/bench_bank.py                  # DCGAN 32x32x3, width 64, batch 64
    python benchmarks/bench_bank.py --size 64 --device cuda

A step is what ``Trainer.train_step`` does after routing: generate a batch, update the
discriminators on real and generated images, then update the generator. Routing itself
(embedding generated images) is measured by bench_routing.py, so here every generated image
gets a fixed, uniformly drawn class. The same generator, networks and batch are used for 1 and
4 discriminators; the ratio of their step times is the cost of the bank. The vmapped bank is
measured against one discriminator without batch normalisation, which it requires.
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


def step_seconds(bank_class, norm, num_discriminators, args, device) -> float:
    torch.manual_seed(0)
    generator = DCGANGenerator(100, args.size, 3, args.width).to(device)
    g_optimizer = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999))
    bank = bank_class(
        partial(DCGANDiscriminator, args.size, 3, args.width, norm),
        partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999)),
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

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, choices=(32, 64))
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", help="JSON file (default benchmarks/results/bank.json)")
    args = parser.parse_args()

    machine = describe_machine()
    device = resolve_device(args.device)
    records = []
    for name, bank_class, norm in [
        ("routed", RoutedDiscriminatorBank, "batch"),
        ("routed", RoutedDiscriminatorBank, "none"),
        ("vmapped", VmappedDiscriminatorBank, "none"),
    ]:
        # The reference for every bank is the routed loop with one discriminator of the same norm.
        one = step_seconds(RoutedDiscriminatorBank, norm, 1, args, device)
        four = step_seconds(bank_class, norm, 4, args, device)
        record = {
            "bank": name,
            "norm": norm,
            "size": args.size,
            "batch": args.batch,
            "one_d_ms": one * 1e3,
            "four_d_ms": four * 1e3,
            "ratio": four / one,
            "device": str(device),
        }
        records.append(record)
        console.print(record)
    print_table("training step, 4 discriminators vs 1", records,
                ["bank", "norm", "size", "batch", "one_d_ms", "four_d_ms", "ratio"])
    write_results("bank", machine, records, args.output)


if __name__ == "__main__":
    main()
