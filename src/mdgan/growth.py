"""Growth schedules: which partition level, and so how many discriminators, at each step.

Starting with one discriminator and splitting every discriminator in two at milestones
(1, 2, 4, 8, ...) keeps routing stable while the generator's early images are still poor: in
the CLIP-MDGAN experiments on CelebA, growing 1 -> 2 at epoch 50 and 2 -> 4 at epoch 100 gave
the best FID, and four discriminators from the first step failed to train.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Sequence

__all__ = ["ConstantGrowthSchedule", "FixedGrowthSchedule", "GrowthSchedule"]


class GrowthSchedule(ABC):
    """Maps a training step (0-based) to a growth level (0 = one discriminator)."""

    @abstractmethod
    def level_at(self, step: int) -> int:
        """Growth level in force during ``step``."""

    @property
    @abstractmethod
    def max_level(self) -> int:
        """Highest level the schedule reaches."""

    def growth_steps(self) -> list[int]:
        """Steps at which the level changes, in increasing order."""
        return []


class FixedGrowthSchedule(GrowthSchedule):
    """Grow by one level at each milestone.

    Parameters
    ----------
    milestones : sequence of int
        Where levels 1, 2, ... begin, strictly increasing, in ``unit``.
    unit : {"steps", "epochs"}
        Unit of the milestones.
    steps_per_epoch : int, optional
        Required when ``unit`` is ``"epochs"``.

    Examples
    --------
    >>> schedule = FixedGrowthSchedule([50, 100], unit="epochs", steps_per_epoch=10)
    >>> [schedule.level_at(step) for step in (0, 499, 500, 999, 1000)]
    [0, 0, 1, 1, 2]
    """

    def __init__(
        self, milestones: Sequence[int], unit: str = "steps", steps_per_epoch: int | None = None
    ) -> None:
        milestones = list(milestones)
        if any(m <= 0 for m in milestones):
            raise ValueError(f"milestones must be positive, got {milestones}")
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {milestones}")
        if unit == "epochs":
            if steps_per_epoch is None or steps_per_epoch <= 0:
                raise ValueError(
                    f"unit 'epochs' needs a positive steps_per_epoch, got {steps_per_epoch}"
                )
            self.steps = [m * steps_per_epoch for m in milestones]
        elif unit == "steps":
            self.steps = milestones
        else:
            raise ValueError(f"unit must be 'steps' or 'epochs', got {unit!r}")
        self.milestones = milestones
        self.unit = unit

    def level_at(self, step: int) -> int:
        return bisect.bisect_right(self.steps, step)

    @property
    def max_level(self) -> int:
        return len(self.steps)

    def growth_steps(self) -> list[int]:
        return list(self.steps)


class ConstantGrowthSchedule(GrowthSchedule):
    """One level for the whole run, for example 4 discriminators from the first step."""

    def __init__(self, level: int) -> None:
        if level < 0:
            raise ValueError(f"level must be non-negative, got {level}")
        self.level = level

    def level_at(self, step: int) -> int:
        return self.level

    @property
    def max_level(self) -> int:
        return self.level

