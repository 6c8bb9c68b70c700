"""Progress reporting hook, so the library stays silent and front ends draw bars."""

from __future__ import annotations

from typing import Protocol

__all__ = ["CounterProgress", "NullProgress", "ProgressHook"]


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


class CounterProgress:
    """Adapts a ``progress(done, total)`` callback, as the data loaders call it, to a hook.

    The task starts on the first call, so a load served from a cache shows no bar, and
    :meth:`stop` stops it only if it started.
    """

    def __init__(self, hook: ProgressHook, task: str, description: str = "") -> None:
        self.hook = hook
        self.task = task
        self.description = description or task
        self.started = False
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.started:
            self.hook.start(self.task, total, self.description)
            self.started = True
        self.hook.advance(self.task, done - self.done)
        self.done = done

    def stop(self) -> None:
        if self.started:
            self.hook.stop(self.task)
