"""Checkpoints as safetensors plus a JSON sidecar.

Tensors go into ``step_NNNNNNN.safetensors``: network weights, optimizer moments, the
partition and RNG states. Everything else goes into ``step_NNNNNNN.json`` next to it: the
step, growth level, optimizer hyper-parameters, class names and the resolved configuration.
Neither file carries code, unlike a pickle.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "CheckpointNotFoundError",
    "find_latest_checkpoint",
    "flatten_optimizer_state",
    "load_checkpoint",
    "save_checkpoint",
    "save_safetensors",
    "unflatten_optimizer_state",
]

_NAME = re.compile(r"^step_(\d+)\.safetensors$")


class CheckpointNotFoundError(FileNotFoundError):
    """Raised when a run directory contains no checkpoint, or a checkpoint file is missing."""


def flatten_optimizer_state(state_dict: dict[str, Any], prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer ``state_dict`` into named tensors and JSON-ready metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.state.{param_id}.{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(
    tensors: dict[str, torch.Tensor], metadata: dict, prefix: str
) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    start = f"{prefix}.state."
    for key, value in tensors.items():
        if key.startswith(start):
            param_id, name = key[len(start) :].split(".", 1)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, values in metadata.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": metadata["param_groups"]}


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically, readable like any other file the user creates.

    safetensors creates files with mode 0600; this applies the process umask instead.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    save_file({name: value.detach().cpu().contiguous() for name, value in tensors.items()}, str(temporary), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)
    return path


def save_checkpoint(
    directory: str | Path, step: int, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> Path:
    """Write ``step_NNNNNNN.safetensors`` and its JSON sidecar atomically; return the tensor file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"step_{step:07d}"
    tensor_path = directory / f"{stem}.safetensors"
    json_path = directory / f"{stem}.json"
    json_temporary = json_path.with_suffix(".json.tmp")
    json_temporary.write_text(json.dumps(metadata, indent=2, default=str), encoding="utf-8")
    # The sidecar lands first, so a tensor file found by find_latest_checkpoint is complete.
    os.replace(json_temporary, json_path)
    return save_safetensors(tensors, tensor_path)


def find_latest_checkpoint(path: str | Path) -> Path:
    """Return the checkpoint with the highest step in a run directory or checkpoint folder.

    A path to a ``.safetensors`` file is returned as it is.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointNotFoundError(
            f"{path} not found: pass a run directory or a checkpoint .safetensors file"
        )
    candidates = []
    for folder in (path / "checkpoints", path):
        if folder.is_dir():
            for item in folder.iterdir():
                match = _NAME.match(item.name)
                if match and item.with_suffix(".json").is_file():
                    candidates.append((int(match.group(1)), item))
    if not candidates:
        raise CheckpointNotFoundError(
            f"no checkpoint (checkpoints/step_NNNNNNN.safetensors with its .json) found in {path}; "
            "train a run there first (mdgan train --out DIR) or pass a checkpoint file"
        )
    return max(candidates)[1]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint (a file, a run directory or its checkpoints folder)."""
    tensor_path = find_latest_checkpoint(path)
    json_path = tensor_path.with_suffix(".json")
    if not json_path.is_file():
        raise CheckpointNotFoundError(f"checkpoint sidecar not found: {json_path}")
    tensors = load_file(str(tensor_path), device=str(device))
    metadata = json.loads(json_path.read_text(encoding="utf-8"))
    metadata["path"] = str(tensor_path)
    return tensors, metadata
