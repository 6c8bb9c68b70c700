"""Discriminator banks: one discriminator per class, trained on routed sub-batches.

Discriminator ``k`` receives only the real images of class ``k`` and the generated images that
the selector routed to class ``k``. The generator is scored by the discriminator each of its
images was routed to. Every discriminator runs only on its own sub-batches, so a bank of ``K``
discriminators costs about as much as one discriminator on the whole batch.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DiscriminatorBank",
    "RoutedDiscriminatorBank",
    "RoutedLoss",
    "discriminator_losses",
    "generator_losses",
]

ModuleFactory = Callable[[], nn.Module]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def discriminator_losses(real_logits: torch.Tensor, fake_logits: torch.Tensor, loss: str):
    """Per-image discriminator losses for real and generated images.

    ``"non-saturating"``: ``-log D(x)`` and ``-log(1 - D(G(z)))`` with ``D = sigmoid(logit)``;
    ``"hinge"``: ``max(0, 1 - logit)`` and ``max(0, 1 + logit)``.
    """
    if loss == "non-saturating":
        return F.softplus(-real_logits), F.softplus(fake_logits)
    if loss == "hinge":
        return F.relu(1.0 - real_logits), F.relu(1.0 + fake_logits)
    raise ValueError(f"unknown loss {loss!r}; choose 'non-saturating' or 'hinge'")


def generator_losses(fake_logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-image generator losses: ``-log D(G(z))`` (non-saturating) or ``-logit`` (hinge)."""
    if loss == "non-saturating":
        return F.softplus(-fake_logits)
    if loss == "hinge":
        return -fake_logits
    raise ValueError(f"unknown loss {loss!r}; choose 'non-saturating' or 'hinge'")


@dataclass
class RoutedLoss:
    """Loss of one routed step and how many images each discriminator saw.

    Attributes
    ----------
    total : torch.Tensor
        Scalar to call ``backward()`` on.
    per_discriminator : torch.Tensor
        Detached loss of each discriminator, ``[K]``; NaN for one that saw no image.
    real_counts, fake_counts : torch.Tensor
        int64 ``[K]``: real and generated images routed to each discriminator.
    """

    total: torch.Tensor
    per_discriminator: torch.Tensor
    real_counts: torch.Tensor
    fake_counts: torch.Tensor


def _group_by_class(classes: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Row indices of each class, as a list of ``num_classes`` int64 tensors."""
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise ValueError(
            f"class indices must lie in [0, {num_classes}), got range "
            f"[{int(classes.min())}, {int(classes.max())}]"
        )
    order = torch.argsort(classes, stable=True)
    counts = torch.bincount(classes, minlength=num_classes).tolist()
    return list(torch.split(order, counts))


class DiscriminatorBank(nn.Module, ABC):
    """The active discriminators, one per class of the current growth level, and their
    optimizers.

    Subclasses decide how routed sub-batches are evaluated. :meth:`grow` is shared: it
    replaces the bank with one discriminator per class of the next level, each a copy of its
    parent's parameters, buffers and optimizer state.

    Parameters
    ----------
    discriminator_factory : callable
        Returns a new discriminator ``nn.Module`` mapping ``[B, C, H, W]`` to logits ``[B]``.
    optimizer_factory : callable
        Builds an optimizer from a discriminator's parameters.
    num_discriminators : int
        Discriminators to start with, each freshly built by the factory.
    loss : {"non-saturating", "hinge"}
        GAN loss.
    """

    def __init__(
        self,
        discriminator_factory: ModuleFactory,
        optimizer_factory: OptimizerFactory,
        num_discriminators: int = 1,
        loss: str = "non-saturating",
    ) -> None:
        super().__init__()
        if num_discriminators < 1:
            raise ValueError(f"num_discriminators must be at least 1, got {num_discriminators}")
        discriminator_losses(torch.zeros(1), torch.zeros(1), loss)  # validates the name
        self.discriminator_factory = discriminator_factory
        self.optimizer_factory = optimizer_factory
        self.loss = loss
        self.discriminators = nn.ModuleList(discriminator_factory() for _ in range(num_discriminators))
        self.optimizers = [optimizer_factory(d.parameters()) for d in self.discriminators]

    @property
    def num_discriminators(self) -> int:
        return len(self.discriminators)

    @abstractmethod
    def discriminator_loss(
        self,
        real: torch.Tensor,
        real_classes: torch.Tensor,
        fake: torch.Tensor,
        fake_classes: torch.Tensor,
    ) -> RoutedLoss:
        """Compute the loss of every discriminator on its real and routed generated images.

        ``total`` is the sum of the discriminators' mean losses. Each discriminator's mean is
        taken over its real images plus over its generated images, as in the standard GAN
        objective.
        """

    @abstractmethod
    def generator_loss(self, fake: torch.Tensor, fake_classes: torch.Tensor) -> RoutedLoss:
        """Generator loss: each generated image scored by the discriminator it was routed to,
        averaged over the whole batch."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        """Apply every discriminator's optimizer."""
        for optimizer in self.optimizers:
            optimizer.step()

    @torch.no_grad()
    def grow(self, parents: Sequence[int] | torch.Tensor) -> None:
        """Replace the bank with one discriminator per entry of ``parents``.

        Child ``k`` starts as an exact copy of discriminator ``parents[k]``: parameters,
        buffers (batch-norm statistics) and optimizer state. Under binary growth every
        discriminator appears twice in ``parents``, so each splits into two.
        """
        parents = [int(p) for p in torch.as_tensor(parents).flatten().tolist()]
        if not parents:
            raise ValueError("parents must name at least one discriminator")
        bad = [p for p in parents if not 0 <= p < self.num_discriminators]
        if bad:
            raise ValueError(
                f"parents {bad} do not name discriminators of this bank (it has "
                f"{self.num_discriminators})"
            )
        children, optimizers = [], []
        for parent in parents:
            child = copy.deepcopy(self.discriminators[parent])
            optimizer = self.optimizer_factory(child.parameters())
            # deepcopy: load_state_dict keeps tensors that are already on the right device,
            # and siblings must not share Adam moments.
            optimizer.load_state_dict(copy.deepcopy(self.optimizers[parent].state_dict()))
            children.append(child)
            optimizers.append(optimizer)
        self.discriminators = nn.ModuleList(children)
        self.optimizers = optimizers


class RoutedDiscriminatorBank(DiscriminatorBank):
    """Evaluates each discriminator only on the images routed to it.

    Discriminator ``k`` runs on the real images of class ``k`` and, in a separate call, on the
    generated images routed to ``k``. The sub-batches of the bank add up to the batch.
    """

    def discriminator_loss(
        self,
        real: torch.Tensor,
        real_classes: torch.Tensor,
        fake: torch.Tensor,
        fake_classes: torch.Tensor,
    ) -> RoutedLoss:
        num = self.num_discriminators
        real_groups = _group_by_class(real_classes.to(real.device), num)
        fake_groups = _group_by_class(fake_classes.to(fake.device), num)
        total = real.new_zeros(())
        per_discriminator = torch.full((num,), float("nan"))
        for k, discriminator in enumerate(self.discriminators):
            real_rows, fake_rows = real_groups[k], fake_groups[k]
            if real_rows.numel() + fake_rows.numel() == 0:
                continue
            # Real and generated images go through separate calls: with batch normalisation a
            # mixed batch shares statistics, and the generator step only ever shows fakes.
            loss = real.new_zeros(())
            if real_rows.numel():
                real_loss, _ = discriminator_losses(discriminator(real[real_rows]), real.new_zeros(0), self.loss)
                loss = loss + real_loss.mean()
            if fake_rows.numel():
                _, fake_loss = discriminator_losses(fake.new_zeros(0), discriminator(fake[fake_rows]), self.loss)
                loss = loss + fake_loss.mean()
            total = total + loss
            per_discriminator[k] = loss.detach().cpu()
        return RoutedLoss(
            total,
            per_discriminator,
            torch.tensor([len(rows) for rows in real_groups]),
            torch.tensor([len(rows) for rows in fake_groups]),
        )

    def generator_loss(self, fake: torch.Tensor, fake_classes: torch.Tensor) -> RoutedLoss:
        num = self.num_discriminators
        fake_groups = _group_by_class(fake_classes.to(fake.device), num)
        total = fake.new_zeros(())
        per_discriminator = torch.full((num,), float("nan"))
        for k, discriminator in enumerate(self.discriminators):
            rows = fake_groups[k]
            if rows.numel() == 0:
                continue
            losses = generator_losses(discriminator(fake[rows]), self.loss)
            total = total + losses.sum()
            per_discriminator[k] = losses.mean().detach().cpu()
        return RoutedLoss(
            total / max(fake.shape[0], 1),
            per_discriminator,
            torch.zeros(num, dtype=torch.int64),
            torch.tensor([len(rows) for rows in fake_groups]),
        )
