"""Throughput measurements of routing: the selector alone, and embedder plus selector.

``mdgan bench selector`` and ``mdgan bench routing`` call these functions, and so do the
scripts in ``benchmarks/``. Each function returns plain records (dicts) that the caller prints
and writes as JSON, together with :func:`machine_info`.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from .selectors import SELECTOR_KINDS, build_selector

__all__ = [
    "bench_routing",
    "bench_selectors",
    "describe_machine",
    "machine_info",
    "time_call",
    "time_calls",
]

logger = logging.getLogger(__name__)

# Selector kinds that route on the CPU whatever the device of the features.
_CPU_ONLY_KINDS = ("faiss", "numba")


def machine_info() -> dict:
    """CPU, memory, accelerator and library versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gb = None
    try:
        # In GiB (2**30 bytes), under the key memory_gb that the recorded results use.
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import faiss

        info["faiss"] = faiss.__version__
    except ImportError:
        info["faiss"] = None
    try:
        import numba

        info["numba"] = numba.__version__
    except ImportError:
        info["numba"] = None
    return info


def describe_machine(info: dict) -> str:
    """Describe the machine of :func:`machine_info` in the one line printed above every benchmark."""
    return (
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GiB, torch {info['torch']} "
        f"({info['torch_threads']} threads), GPU: {info['cuda'] or 'none'}"
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(function: Callable[[], object], device: torch.device, repeats: int = 5, min_seconds: float = 0.2) -> float:
    """Best wall time of ``function`` in seconds, after one warm-up call.

    Calls are repeated at least ``repeats`` times and for at least ``min_seconds`` in all.
    """
    function()
    _synchronize(device)
    best, total, calls = float("inf"), 0.0, 0
    while calls < repeats or total < min_seconds:
        started = time.perf_counter()
        function()
        _synchronize(device)
        elapsed = time.perf_counter() - started
        best = min(best, elapsed)
        total += elapsed
        calls += 1
    return best


def time_calls(
    functions: Mapping[str, Callable[[], object]],
    device: torch.device,
    repeats: int = 5,
    min_seconds: float = 0.2,
) -> dict[str, float]:
    """Return the best wall time of each function in seconds, the functions called in turn.

    Each round calls every function once, so all of them see the same state of the machine.
    On a virtual machine the memory bandwidth can change by a factor of two within a minute,
    and ratios of times taken far apart would mix those states. Rounds repeat at
    least ``repeats`` times and until ``min_seconds`` have passed, after a warm-up round.
    """
    for function in functions.values():
        function()
    _synchronize(device)
    best = dict.fromkeys(functions, float("inf"))
    total, rounds = 0.0, 0
    while rounds < repeats or total < min_seconds:
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            _synchronize(device)
            elapsed = time.perf_counter() - started
            best[name] = min(best[name], elapsed)
            total += elapsed
        rounds += 1
    return best


def bench_selectors(
    num_classes: Sequence[int] = (2, 4, 8, 64),
    dims: Sequence[int] = (512, 768),
    batch_sizes: Sequence[int] = (64, 1024, 16384, 262144, 1048576),
    kinds: Sequence[str] = SELECTOR_KINDS,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Assignments per second of every selector kind on random unit-norm features.

    For each dimension, the largest batch is allocated once and smaller batches are its first
    rows. Every record carries the memory-read bound (one ``sum`` over the batch), timed in
    turn with the selectors of the same shape, as ``bound_per_second``. FAISS and Numba run
    on the CPU only and are skipped on other devices.
    """
    device = torch.device(device)
    records = []
    generator = torch.Generator().manual_seed(0)
    for dim in dims:
        largest = torch.nn.functional.normalize(
            torch.randn(max(batch_sizes), dim, generator=generator), dim=1
        ).to(device)
        for batch in batch_sizes:
            features = largest[:batch]
            for classes in num_classes:
                means = torch.nn.functional.normalize(torch.randn(classes, dim, generator=generator), dim=1)
                selectors = {
                    kind: build_selector(kind, device).fit(means)
                    for kind in kinds
                    if device.type == "cpu" or kind not in _CPU_ONLY_KINDS
                }
                # A selector reads every feature vector at least once, so one sum over the batch
                # is its throughput bound.
                calls = {"bound": lambda: features.sum()}
                calls.update({kind: functools.partial(selector.select, features) for kind, selector in selectors.items()})
                seconds = time_calls(calls, device)
                for kind, selector in selectors.items():
                    record = {
                        "selector": kind,
                        "chosen": getattr(selector, "chosen_kind", kind),
                        "num_classes": classes,
                        "dim": dim,
                        "batch": batch,
                        "per_second": batch / seconds[kind],
                        "bound_per_second": batch / seconds["bound"],
                        "fraction_of_bound": seconds["bound"] / seconds[kind],
                        "device": str(device),
                    }
                    records.append(record)
                    if progress is not None:
                        progress(f"{kind} N={classes} D={dim} B={batch}: {record['per_second'] / 1e6:.2f} M/s")
        del largest
    return records


def bench_routing(
    model_name: str = "ViT-B-32",
    image_sizes: Sequence[int] = (32, 64),
    batch_size: int = 64,
    num_classes: int = 4,
    channels: int = 3,
    selector_kind: str = "torch",
    device: str | torch.device = "cpu",
    repeats: int = 3,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Generated images per second through embedder and selector, against raw ``encode_image``.

    The open_clip model has random weights, because speed does not depend on them. The raw
    encoder runs on images already at its input size and normalised. The routed path starts
    from generator outputs ``[B, channels, size, size]`` in [-1, 1]. It resizes and normalises
    them on the device, encodes them and assigns them to the nearest of ``num_classes`` means.
    """
    from .embedders import OpenClipEmbedder

    device = torch.device(device)
    embedder = OpenClipEmbedder(model_name, pretrained=None, device=device)
    generator = torch.Generator().manual_seed(0)
    means = torch.nn.functional.normalize(torch.randn(num_classes, embedder.feature_dim, generator=generator), dim=1)
    selector = build_selector(selector_kind, device).fit(means)
    prepared = torch.randn(batch_size, 3, *embedder.input_size, generator=generator).to(device)

    def raw() -> torch.Tensor:
        with torch.no_grad():
            return embedder.model.encode_image(prepared)

    raw_seconds = time_call(raw, device, repeats=repeats, min_seconds=0)
    records = []
    for size in image_sizes:
        images = (torch.rand(batch_size, channels, size, size, generator=generator) * 2 - 1).to(device)

        def routed() -> torch.Tensor:
            return selector.select(embedder.embed_images(images))

        routed_seconds = time_call(routed, device, repeats=repeats, min_seconds=0)
        record = {
            "model": model_name,
            "image_size": size,
            "channels": channels,
            "batch": batch_size,
            "raw_encode_per_second": batch_size / raw_seconds,
            "routed_per_second": batch_size / routed_seconds,
            "ratio": raw_seconds / routed_seconds,
            "device": str(device),
        }
        records.append(record)
        if progress is not None:
            progress(f"{size}x{size}: routed {record['routed_per_second']:.1f}/s, raw {record['raw_encode_per_second']:.1f}/s")
    return records
