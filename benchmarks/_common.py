"""Shared helpers of the benchmark scripts: machine description, tables and JSON results."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mdgan.bench import describe_machine as describe_machine_line
from mdgan.bench import machine_info

RESULTS = Path(__file__).resolve().parent / "results"
# Wide enough for every table when the output goes to a file or a pipe.
console = Console() if sys.stdout.isatty() else Console(width=160)


def describe_machine() -> dict:
    """Print and return the machine description."""
    info = machine_info()
    console.print(describe_machine_line(info))
    return info


def print_table(title: str, records: list[dict], columns: list[str]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for record in records:
        cells = []
        for column in columns:
            value = record.get(column, "")
            if isinstance(value, float):
                value = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
            cells.append(str(value))
        table.add_row(*cells)
    console.print(table)


def write_results(name: str, machine: dict, records: list[dict], output: str | None = None, **extra) -> Path:
    """Write ``{"benchmark", "command", "machine", "records", ...}`` as JSON and return the path."""
    path = Path(output) if output else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "command": " ".join(["python"] + sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine,
        "records": records,
        **extra,
    }
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    console.print(f"results written to {path}")
    return path
