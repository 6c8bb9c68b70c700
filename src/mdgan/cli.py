"""The ``mdgan`` command line: embed, partition, train, sample, eval and demo."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .config import ConfigError, TrainConfig, load_config

if TYPE_CHECKING:
    import torch

app = typer.Typer(
    name="mdgan",
    help="Train one GAN generator against several discriminators whose tasks are allocated by "
    "CLIP (CLIP-MDGAN).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML, JSON or TOML configuration file.", exists=True, dir_okay=False),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a setting, e.g. --set optim.lr_g=1e-4 (repeatable)."),
]


class RichProgress:
    """Draws the library's progress reports as rich progress bars."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def start(self, task: str, total: int | None, description: str = "") -> None:
        self.tasks[task] = self.progress.add_task(description or task, total=total, info="")

    def advance(self, task: str, amount: int = 1, **fields: object) -> None:
        if task not in self.tasks:
            return
        info = "  ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()
        )
        self.progress.update(self.tasks[task], advance=amount, info=info)

    def stop(self, task: str) -> None:
        if task in self.tasks:
            task_id = self.tasks.pop(task)
            state = next(t for t in self.progress.tasks if t.id == task_id)
            if state.total is None:
                # A task of unknown length, such as partitioning, shows as done: 1/1.
                done = max(1, int(state.completed))
                self.progress.update(task_id, total=done, completed=done)
            self.progress.update(task_id, visible=True)
            self.progress.stop_task(task_id)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log warnings and errors only.")] = False,
) -> None:
    level = logging.INFO
    if verbose:
        level = logging.DEBUG
    elif quiet:
        level = logging.WARNING
    handler = RichHandler(console=console, show_path=False, markup=False)
    # open_clip logs its model set-up to the root logger, and faiss logs its CPU features.
    # Both drown mdgan's own messages, so they are shown only with --verbose.
    if not verbose:
        handler.addFilter(lambda record: record.name != "root" or record.levelno >= logging.WARNING)
        logging.getLogger("faiss").setLevel(logging.WARNING)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)


def _config(config: Optional[Path], overrides: Optional[list[str]], extra: list[str] = ()) -> TrainConfig:
    try:
        return load_config(config, list(overrides or []) + list(extra))
    except ConfigError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


def _fail(error: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {error}")
    return typer.Exit(1)


def _load_data(cfg: TrainConfig, bars: RichProgress):
    from .data import DatasetError, load_dataset
    from .progress import CounterProgress

    report = CounterProgress(bars, "decode")
    try:
        dataset = load_dataset(cfg.data, progress=report)
    except (DatasetError, OSError, ValueError) as error:
        raise _fail(error) from error
    report.stop()
    if dataset.skipped:
        console.print(f"[yellow]{len(dataset.skipped)} unreadable files skipped[/yellow], first: {dataset.skipped[0][0]}")
    return dataset


def _feature_cache(cfg: TrainConfig) -> Path:
    from .data import default_cache_dir

    return (cfg.data.cache_dir or default_cache_dir()) / "features"


def _embedder(cfg: TrainConfig, channels: int):
    from .build import build_embedder, resolve_device
    from .embedders import ClipWeightsNotFoundError

    try:
        return build_embedder(cfg.embedder, channels, resolve_device(cfg.device))
    except (ClipWeightsNotFoundError, ValueError, RuntimeError) as error:
        raise _fail(error) from error


@app.command()
def embed(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors file of features [N, D].")],
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Embed every image of a dataset and save the features."""
    from .features import compute_features, save_features

    cfg = _config(config, overrides)
    with _progress() as progress:
        bars = RichProgress(progress)
        dataset = _load_data(cfg, bars)
        embedder, reason = _embedder(cfg, dataset.channels)
        started = time.perf_counter()
        features = compute_features(dataset, embedder, cfg.embedder.batch_size, cache_dir=_feature_cache(cfg), progress=bars)
    try:
        save_features(out, features, {"embedder": embedder.describe(), "dataset": dataset.name})
    except OSError as error:
        raise _fail(error) from error
    table = Table(title="features")
    for column in ("dataset", "images", "dim", "embedder", "why", "seconds", "file"):
        table.add_column(column)
    table.add_row(
        dataset.name, str(len(features)), str(features.shape[1]), embedder.describe(), reason,
        f"{time.perf_counter() - started:.1f}", str(out),
    )
    console.print(table)


def _print_partition(partition) -> None:
    for level in range(partition.num_levels):
        count = partition.num_classes(level)
        table = Table(title=f"level {level}: {count} {'class' if count == 1 else 'classes'}")
        table.add_column("class", justify="right")
        table.add_column("name")
        table.add_column("images", justify="right")
        table.add_column("share", justify="right")
        table.add_column("parent", justify="right")
        sizes = partition.class_sizes(level)
        for c, size in enumerate(sizes):
            table.add_row(
                str(c), partition.class_names[level][c], str(size),
                f"{100 * size / partition.num_images:.1f}%", str(partition.parents[level][c]),
            )
        console.print(table)


@app.command()
def partition(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the partition and previews.")],
    config: ConfigOption = None,
    overrides: SetOption = None,
    features: Annotated[
        Optional[Path], typer.Option(help="Features from 'mdgan embed'; computed when omitted.")
    ] = None,
) -> None:
    """Split a dataset into nested classes (Ward or prompts) and write preview grids."""
    from .build import build_partitioner
    from .features import compute_features, load_features
    from .outputs import write_partition

    cfg = _config(config, overrides)
    with _progress() as progress:
        bars = RichProgress(progress)
        dataset = _load_data(cfg, bars)
        embedder, reason = _embedder(cfg, dataset.channels)
        if features is not None:
            try:
                values = load_features(features)
            except FileNotFoundError as error:
                raise _fail(error) from error
            if len(values) != len(dataset):
                raise _fail(ValueError(
                    f"{features} contains {len(values)} feature rows but the dataset has {len(dataset)} "
                    "images; embed the same data settings"
                ))
        else:
            values = compute_features(dataset, embedder, cfg.embedder.batch_size, cache_dir=_feature_cache(cfg), progress=bars)
        try:
            bars.start("partition", None, "partition")
            result = build_partitioner(cfg.partition, embedder).fit(values)
            bars.stop("partition")
        except ValueError as error:
            raise _fail(error) from error
    write_partition(out, result, values, dataset, embedder.describe(), reason,
                    cfg.output.preview_per_class, cfg.seed)
    _print_partition(result)
    console.print(f"partition and previews written to [bold]{out}[/bold]")


def _train(cfg: TrainConfig, resume: bool) -> Path:
    from .checkpoint import CheckpointNotFoundError, find_latest_checkpoint
    from .embedders import ClipWeightsNotFoundError
    from .trainer import Trainer

    if resume:
        # Fail before decoding and embedding the data.
        try:
            find_latest_checkpoint(cfg.output.dir)
        except CheckpointNotFoundError as error:
            raise _fail(CheckpointNotFoundError(f"cannot resume: {error}; drop --resume to start a new run")) from error

    with _progress() as progress:
        bars = RichProgress(progress)
        dataset = _load_data(cfg, bars)
        try:
            trainer = Trainer(cfg, dataset=dataset, progress=bars)
            console.print(f"embedder: [bold]{trainer.embedder.describe()}[/bold] ({trainer.embedder_reason})")
            run_dir = trainer.train(resume=resume)
        except (CheckpointNotFoundError, ClipWeightsNotFoundError, FileExistsError, ValueError, RuntimeError) as error:
            raise _fail(error) from error
    _print_run_summary(run_dir)
    return run_dir


def _print_run_summary(run_dir: Path) -> None:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    evaluations = [r for r in records if "eval" in r]
    records = [r for r in records if "eval" not in r]
    table = Table(title=f"run {run_dir}")
    for column in ("step", "D", "loss_g", "loss_d", "real_per_d", "fake_per_d", "seconds"):
        table.add_column(column)
    shown = records if len(records) <= 12 else records[:: max(1, len(records) // 12)]
    if records and shown[-1] is not records[-1]:
        shown.append(records[-1])
    for r in shown:
        losses = ", ".join("-" if v is None else f"{v:.3f}" for v in r["loss_d"])
        table.add_row(
            str(r["step"]), str(r["num_discriminators"]), f"{r['loss_g']:.3f}", losses,
            str(r["real_per_d"]), str(r["fake_per_d"]), f"{r['seconds']:.1f}",
        )
    console.print(table)
    if evaluations:
        _print_evaluation(evaluations[-1])
    console.print(
        f"samples: {run_dir / 'samples'}\npartition previews: {run_dir / 'partition'}\n"
        f"checkpoints: {run_dir / 'checkpoints'}"
    )


@app.command()
def train(
    config: Annotated[
        Optional[Path], typer.Argument(help="YAML, JSON or TOML configuration file.", exists=True, dir_okay=False)
    ] = None,
    overrides: SetOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory (output.dir).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training length in steps (optim.steps).", min=1)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's latest checkpoint.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier run in the run directory.")
    ] = False,
) -> None:
    """Train from a configuration file plus overrides."""
    extra = ["output.overwrite=true"] if overwrite else []
    if resume and config is None and out is not None and (out / "config.yaml").is_file():
        config = out / "config.yaml"
    if out is not None:
        extra.append(f"output.dir={out}")
    if steps is not None:
        extra.append(f"optim.steps={steps}")
    _train(_config(config, overrides, extra), resume)


@app.command()
def sample(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory or checkpoint .safetensors file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file for a grid, or a directory with --files.")],
    num: Annotated[int, typer.Option("--num", "-n", help="Number of images.", min=1)] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the noise.")] = 0,
    files: Annotated[bool, typer.Option("--files", help="Write one PNG per image instead of a grid.")] = False,
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda'.")] = "auto",
) -> None:
    """Generate images from a trained generator."""
    from .checkpoint import CheckpointNotFoundError
    from .sampling import generate, load_generator, save_images

    try:
        generator, metadata = load_generator(checkpoint, device)
    except (CheckpointNotFoundError, KeyError, ValueError) as error:
        raise _fail(error) from error
    if out.is_dir() and not files:
        raise _fail(ValueError(f"--out {out} is a directory; pass --files for one image per file, or a .png path for a grid"))
    images = generate(generator, num, seed)
    try:
        written = save_images(images, out, as_files=files)
    except (OSError, ValueError) as error:
        raise _fail(error) from error
    console.print(
        f"{num} images from step {metadata['step']} ({metadata['num_discriminators']} discriminators) "
        f"written to [bold]{written}[/bold]"
    )


def _print_evaluation(record: dict) -> None:
    """Print one evaluation record of metrics.jsonl as tables."""
    spaces = record.get("feature_spaces", {})
    table = Table(title=f"evaluation at step {record['step']}: {record['num_samples']} generated, "
                        f"{record['num_real']} real images")
    for column in ("metric", "value", "feature space"):
        table.add_column(column)
    values = record["eval"]
    for name, value in values.items():
        if name.endswith("_std"):
            continue
        # Names are metric_space@count, and coverage's "space" is the run's classes.
        space = name.split("@")[0].split("_", 1)[1]
        shown = f"{value:.4f}"
        if name + "_std" in values:
            shown += f" ± {values[name + '_std']:.4f}"
        table.add_row(name, shown, spaces.get(space, "classes of the run's selector"))
    console.print(table)

    coverage = record.get("coverage")
    if coverage is None:
        return
    table = Table(title=f"coverage of the {len(coverage['classes'])} classes of level {coverage['level']} "
                        f"(routed by {coverage['router']})")
    for column in ("class", "name", "real share", "generated share", "generated", "dropped"):
        table.add_column(column, justify="left" if column == "name" else "right")
    # Per-class names are fd_<space>@<generated count>, and the count has its own column.
    for name in coverage["classes"][0].get("fd", {}):
        table.add_column(name.split("@")[0], justify="right")
    for row in coverage["classes"]:
        distances = ["-" if value is None else f"{value:.3f}" for value in row.get("fd", {}).values()]
        table.add_row(
            str(row["class"]), row["name"], f"{100 * row['real_share']:.1f}%",
            f"{100 * row['generated_share']:.1f}%", str(row["generated_count"]),
            "[red]DROPPED[/red]" if row["dropped"] else "no", *distances,
        )
    console.print(table)
    if coverage["dropped"]:
        console.print(
            f"[red]dropped modes:[/red] class(es) {', '.join(map(str, coverage['dropped']))} received under "
            f"{100 * coverage['dropped_share_ratio']:.0f}% of their share of real images"
        )


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory or checkpoint .safetensors file.")],
    metric: Annotated[
        Optional[list[str]],
        typer.Option("--metric", "-m", help="fd, kid, coverage or fid (repeatable); default: eval.metrics of the run."),
    ] = None,
    num_samples: Annotated[
        Optional[int], typer.Option("--num-samples", "-n", help="Generated images (eval.num_samples).", min=2)
    ] = None,
    feature_space: Annotated[
        Optional[list[str]],
        typer.Option("--feature-space", "-f",
                     help="pixels, fmnist-classifier, clip or inception (repeatable); default: "
                          "pixels, plus fmnist-classifier on Fashion-MNIST."),
    ] = None,
    num_real: Annotated[
        Optional[int], typer.Option(help="Real images for the real statistics; default: all.", min=2)
    ] = None,
    inception_weights: Annotated[
        Optional[Path], typer.Option(help="Inception-v3 weights file (pt_inception-2015-12-05-6726825d.pth).")
    ] = None,
    classifier_weights: Annotated[
        Optional[Path], typer.Option(help="Fashion-MNIST classifier weights; default: the file shipped with mdgan.")
    ] = None,
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda'.")] = "auto",
    overrides: SetOption = None,
) -> None:
    """Evaluate a trained generator: Fréchet distances, KID and class coverage.

    The result is printed and appended to the run's metrics.jsonl.
    """
    from .checkpoint import CheckpointNotFoundError
    from .data import DatasetError
    from .evaluation import append_record, evaluate_checkpoint, run_directory

    extra = list(overrides or [])
    options = {
        "eval.metrics": metric,
        "eval.num_samples": num_samples,
        "eval.feature_spaces": feature_space,
        "eval.num_real": num_real,
        "eval.inception_weights": str(inception_weights) if inception_weights else None,
        "eval.classifier_weights": str(classifier_weights) if classifier_weights else None,
    }
    extra += [f"{key}={json.dumps(value)}" for key, value in options.items() if value is not None]
    with _progress() as progress:
        try:
            result = evaluate_checkpoint(checkpoint, extra, device, progress=RichProgress(progress))
        except ConfigError as error:
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from error
        except (CheckpointNotFoundError, DatasetError, FileNotFoundError, ValueError, RuntimeError) as error:
            raise _fail(error) from error
    path = append_record(run_directory(result.checkpoint), result)
    _print_evaluation(result.to_record())
    console.print(f"evaluated {result.checkpoint} in {result.seconds:.1f} s; appended to {path}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = Path("runs/demo"),
    steps: Annotated[int, typer.Option(help="Training steps; growth happens at 1/3 and 2/3.", min=3)] = 2400,
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda'.")] = "auto",
    overrides: SetOption = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier run in the run directory.")
    ] = False,
) -> None:
    """Run the whole method on Fashion-MNIST at 32x32: embed, Ward into 4 classes, grow 1->2->4."""
    from .demo import demo_overrides

    extra = ["output.overwrite=true"] if overwrite else []
    cfg = _config(None, demo_overrides(out, steps, device) + extra + list(overrides or []))
    started = time.perf_counter()
    run_dir = _train(cfg, resume=False)
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")
    console.print(f"try: mdgan sample {run_dir} --out {run_dir / 'grid.png'}")


bench_app = typer.Typer(help="Measure selector and routing speed on this machine.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _write_bench(name: str, records: list[dict], output: Optional[Path]) -> None:
    from .bench import machine_info

    payload = {
        "benchmark": name,
        "command": " ".join(["mdgan"] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "records": records,
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        console.print(f"results written to {output}")


def _start_bench(device: str) -> torch.device:
    """Resolve the benchmark's device, or exit with an error, and print the machine line."""
    from .bench import describe_machine, machine_info
    from .build import resolve_device

    try:
        target = resolve_device(device)
    except RuntimeError as error:
        raise _fail(error) from None
    console.print(describe_machine(machine_info()))
    return target


@bench_app.command("selector")
def bench_selector(
    num_classes: Annotated[
        list[int], typer.Option("--classes", help="Class counts (repeatable).", min=1)
    ] = [2, 4, 8, 64],
    dims: Annotated[list[int], typer.Option("--dim", help="Feature dimensions (repeatable).", min=1)] = [512, 768],
    batches: Annotated[
        list[int], typer.Option("--batch", help="Batch sizes in vectors (repeatable).", min=1)
    ] = [64, 1024, 16384, 262144, 1048576],
    device: Annotated[str, typer.Option(help="'cpu', 'cuda', 'cuda:N' or 'auto'.")] = "cpu",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSON file for the results.")] = None,
) -> None:
    """Assignments per second of every selector, next to the memory-read bound."""
    from .bench import bench_selectors

    target = _start_bench(device)
    records = bench_selectors(num_classes, dims, batches, device=target, progress=lambda text: console.log(text))
    table = Table(title="selector throughput (million vectors per second)")
    for column in ("selector", "chosen", "N", "D", "batch", "M/s", "bound M/s", "of bound"):
        table.add_column(column, justify="right")
    for r in records:
        table.add_row(
            r["selector"], r["chosen"], str(r["num_classes"]), str(r["dim"]), str(r["batch"]),
            f"{r['per_second'] / 1e6:.2f}", f"{r['bound_per_second'] / 1e6:.2f}", f"{r['fraction_of_bound']:.0%}",
        )
    console.print(table)
    _write_bench("selector", records, output)


@bench_app.command("routing")
def bench_routing_command(
    model: Annotated[str, typer.Option(help="open_clip architecture (random weights).")] = "ViT-B-32",
    batch: Annotated[int, typer.Option(help="Generated images per batch.", min=1)] = 64,
    repeats: Annotated[int, typer.Option(help="Timed repeats (best reported).", min=1)] = 3,
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda'.")] = "auto",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSON file for the results.")] = None,
) -> None:
    """Generated images per second through embedder and selector, against raw encode_image."""
    from .bench import bench_routing

    target = _start_bench(device)
    records = bench_routing(model, batch_size=batch, device=target, repeats=repeats,
                            progress=lambda text: console.log(text))
    table = Table(title=f"routing throughput, {model}, batch {batch} (images per second)")
    for column in ("image size", "raw encode_image", "embed + select", "ratio"):
        table.add_column(column, justify="right")
    for r in records:
        table.add_row(
            f"{r['image_size']}x{r['image_size']}", f"{r['raw_encode_per_second']:.1f}",
            f"{r['routed_per_second']:.1f}", f"{r['ratio']:.3f}",
        )
    console.print(table)
    _write_bench("routing", records, output)


if __name__ == "__main__":
    app()
