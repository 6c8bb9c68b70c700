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
    "VmappedDiscriminatorBank",
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

    def _groups(self, classes: torch.Tensor, images: torch.Tensor) -> list[torch.Tensor]:
        """Row indices of ``images`` routed to each discriminator, on the images' device."""
        return _group_by_class(classes.to(images.device), self.num_discriminators)

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
        real_groups = self._groups(real_classes, real)
        fake_groups = self._groups(fake_classes, fake)
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
        fake_groups = self._groups(fake_classes, fake)
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


class VmappedDiscriminatorBank(DiscriminatorBank):
    """Evaluates all discriminators in one call, vectorised over their stacked parameters.

    Each step pads the routed sub-batches to the largest one and runs ``torch.func.vmap`` of
    one discriminator over the stacked parameters of all of them. Convolutions then become one
    grouped convolution. This trades the ``K`` small calls of :class:`RoutedDiscriminatorBank`
    for one large call, which pays off on GPUs where small calls leave the device idle.
    Padded rows are masked out of the losses, and gradients reach every discriminator's own
    parameters through the stacking.

    Batch normalisation mixes the rows of a batch, so padded rows would change the statistics:
    discriminators with batch-norm layers are rejected (use ``discriminator_norm="none"``).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._check_no_batch_statistics()

    def _check_no_batch_statistics(self) -> None:
        for module in self.discriminators.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) or getattr(module, "track_running_stats", False):
                raise ValueError(
                    f"VmappedDiscriminatorBank cannot batch discriminators with {type(module).__name__}, "
                    "whose statistics mix padded rows into real ones; use discriminators without "
                    "batch normalisation (model.discriminator_norm=none) or RoutedDiscriminatorBank"
                )

    def grow(self, parents: Sequence[int] | torch.Tensor) -> None:
        super().grow(parents)
        self._check_no_batch_statistics()

    def step(self) -> None:
        """Apply the optimizers of the discriminators that received images."""
        idle = getattr(self, "_idle", None) or [False] * self.num_discriminators
        for optimizer, is_idle in zip(self.optimizers, idle):
            if not is_idle:
                optimizer.step()
        self._idle = None

    def _vmapped_logits(self, images: torch.Tensor, groups: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[K, M]`` of every discriminator on its padded rows, and the row mask."""
        from torch.func import functional_call, vmap

        num = self.num_discriminators
        rows = max(1, max(len(group) for group in groups))
        index = torch.zeros(num, rows, dtype=torch.int64, device=images.device)
        mask = torch.zeros(num, rows, dtype=torch.bool, device=images.device)
        for k, group in enumerate(groups):
            index[k, : len(group)] = group
            mask[k, : len(group)] = True
        batch = images[index]  # [K, M, C, H, W]

        names = [name for name, _ in self.discriminators[0].named_parameters()]
        stacked = {
            name: torch.stack([dict(d.named_parameters())[name] for d in self.discriminators])
            for name in names
        }
        buffers = {
            name: torch.stack([dict(d.named_buffers())[name] for d in self.discriminators])
            for name, _ in self.discriminators[0].named_buffers()
        }
        template = self.discriminators[0]

        def run(parameters, module_buffers, inputs):
            return functional_call(template, (parameters, module_buffers), (inputs,))

        logits = vmap(run)(stacked, buffers, batch)  # [K, M]
        return logits, mask

    def discriminator_loss(
        self,
        real: torch.Tensor,
        real_classes: torch.Tensor,
        fake: torch.Tensor,
        fake_classes: torch.Tensor,
    ) -> RoutedLoss:
        num = self.num_discriminators
        real_groups = self._groups(real_classes, real)
        fake_groups = self._groups(fake_classes, fake)
        # Without batch statistics, real and generated images can share one call.
        offset = real.shape[0]
        groups = [torch.cat([r, f + offset]) for r, f in zip(real_groups, fake_groups)]
        logits, mask = self._vmapped_logits(torch.cat([real, fake]), groups)

        real_counts = torch.tensor([len(g) for g in real_groups], device=real.device)
        fake_counts = torch.tensor([len(g) for g in fake_groups], device=real.device)
        positions = torch.arange(logits.shape[1], device=real.device).unsqueeze(0)
        is_real = mask & (positions < real_counts.unsqueeze(1))
        is_fake = mask & ~is_real
        real_loss, fake_loss = discriminator_losses(logits, logits, self.loss)
        real_mean = (real_loss * is_real).sum(dim=1) / real_counts.clamp(min=1)
        fake_mean = (fake_loss * is_fake).sum(dim=1) / fake_counts.clamp(min=1)
        per_discriminator = real_mean + fake_mean
        empty = (real_counts + fake_counts) == 0
        # Stacking gives idle discriminators zero gradients, and Adam would still move them on
        # momentum. So step() skips them, as the routed loop does by leaving their gradients None.
        self._idle = empty.tolist()
        return RoutedLoss(
            per_discriminator.sum(),
            per_discriminator.detach().cpu().masked_fill(empty.cpu(), float("nan")),
            real_counts.cpu(),
            fake_counts.cpu(),
        )

    def generator_loss(self, fake: torch.Tensor, fake_classes: torch.Tensor) -> RoutedLoss:
        num = self.num_discriminators
        groups = self._groups(fake_classes, fake)
        logits, mask = self._vmapped_logits(fake, groups)
        losses = generator_losses(logits, self.loss) * mask
        counts = mask.sum(dim=1)
        per_discriminator = (losses.sum(dim=1) / counts.clamp(min=1)).detach().cpu()
        return RoutedLoss(
            losses.sum() / max(fake.shape[0], 1),
            per_discriminator.masked_fill((counts == 0).cpu(), float("nan")),
            torch.zeros(num, dtype=torch.int64),
            counts.cpu(),
        )
