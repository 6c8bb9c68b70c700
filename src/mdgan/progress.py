"""Progress reporting hook, so the library stays silent and front ends draw bars."""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullProgress", "ProgressHook"]


class ProgressHook(Protocol):
    """Receives progress of long tasks ("decode", "embed", "train", ...)."""

    def start(self, task: str, total: int | None, description: str = "") -> None: ...

    def advance(self, task: str, amount: int = 1, **fields: object) -> None: ...

    def stop(self, task: str) -> None: ...


class NullProgress:
    """A hook that ignores every report."""

    def start(self, task: str, total: int | None, description: str = "") -> None:
        pass

    def advance(self, task: str, amount: int = 1, **fields: object) -> None:
        pass

    def stop(self, task: str) -> None:
        pass
