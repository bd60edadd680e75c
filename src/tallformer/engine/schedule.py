"""The paper's learning-rate schedule: cosine annealing with restarts by epoch, linear warm-up.

Per parameter group with base learning rate ``b`` (0.01 for the neck and head, 0.004 for
the backbone in the paper), at ``e`` completed epochs:

    lr(e) = m b + 0.5 (b - m b) (1 + cos(pi (e mod P) / P))         m = min_lr_ratio, P = cosine_period

set once before each epoch (original: vedacore/hooks/lr_scheduler.py:115-124, 290-307, 403-417;
configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:242-250). During the warm-up the
epoch's value is scaled by ``r + (1 - r) it / W`` while ``it < W`` (r = warmup_ratio,
W = warmup_iters; original: lr_scheduler.py:84-93, 126-142).

The original counts ``it`` in optimizer steps, so its warm-up lasts 500 steps of whatever
global batch the run has (38 epochs on 4 GPUs, 10 on one). Here ``it`` is counted in
samples: ``it = samples_seen / warmup_batch`` with ``warmup_batch`` = 16 (the paper's global
batch, 4 GPUs x 4 clips), so the warm-up covers the same 8,000 clips on any number of GPUs;
``train.warmup_batch=null`` counts this run's own steps, as the original does.

``train.schedule=multistep`` is the ActivityNet recipe's MultiStepLR instead, stepped per
epoch: ``lr(e) = b gamma^(number of milestones <= e)`` (original:
AFSD/anet_video_cls/membank/train_membank.py:382-498, milestones [8, 10], gamma 0.1).

``train.schedule=warmup_cosine`` is ActionFormer's recipe (original:
libs/utils/lr_schedulers.py:10-120, ``LinearWarmupCosineAnnealingLR`` in its closed form;
libs/utils/train_utils.py:133-149), set before every step ``k`` (0, 1, ...) of a run of
``M = max_epochs x steps_per_epoch`` steps, with a warm-up of ``W`` steps (the warm-up's
``warmup_iters`` steps of ``warmup_batch`` clips, in this run's steps):

    k < W:  lr = b (r + (1 - r) min(k / (W - 1), 1))                   r = warmup_ratio
    k >= W: lr = m b + 0.5 (b - m b) (1 + cos(pi (k - W) / (M - W)))    m = min_lr_ratio

The release warms up from 0 (r = 0) over 5 epochs of its steps and anneals to 1e-8 (m =
1e-8 / lr) over the remaining 30; its first step runs at lr 0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tallformer.errors import TallformerWarning

if TYPE_CHECKING:
    import torch

    from tallformer.config import TrainConfig

__all__ = ["LrSchedule", "ScheduleWarning", "schedule_misfits", "warn_schedule_misfits"]

# a cosine run "anneals" when its rate at the end is at most this fraction of the base rate
ANNEALED = 0.1


class ScheduleWarning(TallformerWarning):
    """A learning-rate schedule that does not fit the run's length (see `schedule_misfits`)."""


@dataclass(frozen=True)
class LrSchedule:
    """Cosine restarts by epoch plus a linear warm-up counted in samples, MultiStepLR, or
    ActionFormer's warm-up and cosine by step (see the module)."""

    cosine_period: int = 100
    min_lr_ratio: float = 0.01
    warmup_iters: int = 500
    warmup_ratio: float = 0.1
    warmup_batch: int | None = 16
    kind: str = "cosine"  # or "multistep", "warmup_cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    max_epochs: int = 1000  # the run's length (warmup_cosine anneals over it)

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> LrSchedule:
        return cls(cfg.cosine_period, cfg.min_lr_ratio, cfg.warmup_iters, cfg.warmup_ratio,
                   cfg.warmup_batch, cfg.schedule, tuple(cfg.milestones), cfg.gamma, cfg.max_epochs)

    def epoch_lr(self, base: float, epoch: int) -> float:
        """``lr(e)`` for a group of base rate ``base`` after ``epoch`` completed epochs."""
        if self.kind == "multistep":
            return base * self.gamma ** sum(1 for m in self.milestones if m <= epoch)
        phase = (epoch % self.cosine_period) / self.cosine_period
        low = self.min_lr_ratio * base
        return low + 0.5 * (base - low) * (1 + math.cos(math.pi * phase))

    def warmup_iteration(self, samples: int, global_batch: int) -> float:
        """The warm-up's ``it`` after ``samples`` training samples (of all ranks)."""
        return samples / (self.warmup_batch if self.warmup_batch is not None else global_batch)

    def lr(self, base: float, epoch: int, samples: int, global_batch: int,
           steps_per_epoch: int | None = None) -> float:
        """The learning rate of the next step: ``lr(e)``, warmed up while ``it < W``;
        ``warmup_cosine``: `step_lr` (which needs `steps_per_epoch`)."""
        if self.kind == "warmup_cosine":
            if steps_per_epoch is None:
                raise ValueError("train.schedule=warmup_cosine is set per step: give steps_per_epoch")
            return self.step_lr(base, samples, global_batch, steps_per_epoch)
        value = self.epoch_lr(base, epoch)
        it = self.warmup_iteration(samples, global_batch)
        if it < self.warmup_iters:
            value *= self.warmup_ratio + (1 - self.warmup_ratio) * it / self.warmup_iters
        return value

    def step_lr(self, base: float, samples: int, global_batch: int, steps_per_epoch: int) -> float:
        """``warmup_cosine`` before the step after ``samples`` training samples (see the
        module): step ``k = samples / global_batch`` of ``M = max_epochs x steps_per_epoch``,
        warm-up steps ``W = warmup_iters x warmup_batch / global_batch``."""
        k = samples / global_batch
        warm = self.warmup_iters * (self.warmup_batch or global_batch) / global_batch
        total = self.max_epochs * steps_per_epoch
        if k < warm:
            frac = min(k / (warm - 1), 1.0) if warm > 1 else 1.0
            return base * (self.warmup_ratio + (1 - self.warmup_ratio) * frac)
        low = self.min_lr_ratio * base
        phase = min((k - warm) / (total - warm), 1.0) if total > warm else 1.0
        return low + 0.5 * (base - low) * (1 + math.cos(math.pi * phase))

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, samples: int,
              global_batch: int, steps_per_epoch: int | None = None) -> list[float]:
        """Set every group's ``lr`` from its ``base_lr``; returns the rates, group by group.
        `steps_per_epoch`: this run's optimizer steps per epoch (``warmup_cosine`` needs it)."""
        rates = []
        for group in optimizer.param_groups:
            group["lr"] = self.lr(group["base_lr"], epoch, samples, global_batch, steps_per_epoch)
            rates.append(group["lr"])
        return rates


def schedule_misfits(cfg: TrainConfig, steps_per_epoch: int, global_batch: int) -> list[str]:
    """What in ``cfg``'s schedule does not fit a run of ``cfg.max_epochs`` epochs, one line each.

    - cosine: the rate at the run's end is still above `ANNEALED` of the base rate
      (``max_epochs`` shorter than ``cosine_period``, or ending early in a restarted cycle);
    - multistep: every milestone at or after ``max_epochs`` (the rate never drops);
    - a warm-up longer than the run (the rate never reaches its base).

    ``steps_per_epoch``, ``global_batch``: this run's (the warm-up counts samples).

    Example:
        >>> from tallformer.config import load_config
        >>> train = load_config("demo", ["train.max_epochs=20"]).train
        >>> schedule_misfits(train, 15, 2)[0].split(":")[0]
        'train.max_epochs=20 ends 13% into the first cosine cycle of train.cosine_period=150 epochs'
    """
    schedule = LrSchedule.from_config(cfg)
    epochs = cfg.max_epochs
    out = []
    if schedule.kind == "warmup_cosine":
        pass  # anneals over the run by construction
    elif schedule.kind == "cosine":
        period = schedule.cosine_period
        phase = (epochs % period) / period or 1.0  # where in its cycle the run ends (1: a whole cycle)
        low = schedule.min_lr_ratio
        end = low + 0.5 * (1 - low) * (1 + math.cos(math.pi * phase))
        if end > ANNEALED:
            where = (f"ends {100 * phase:.0f}% into the first cosine cycle" if epochs < period else
                     f"ends {100 * phase:.0f}% into cosine cycle {epochs // period + 1}")
            out.append(f"train.max_epochs={epochs} {where} of train.cosine_period={period} epochs: the learning "
                       f"rate is still {100 * end:.0f}% of its base at the end, it never anneals; set "
                       f"train.cosine_period={epochs} (or a divisor of train.max_epochs) to anneal within the run")
    elif schedule.milestones and min(schedule.milestones) >= epochs:
        out.append(f"train.milestones {list(schedule.milestones)} are all at or after train.max_epochs={epochs}: "
                   "the learning rate never drops; set milestones below train.max_epochs")
    if schedule.warmup_iters > 0:
        run = epochs * steps_per_epoch * global_batch
        warm = schedule.warmup_iters * (schedule.warmup_batch or global_batch)
        if warm > run:
            out.append(f"the warm-up (train.warmup_iters={schedule.warmup_iters} steps of "
                       f"{schedule.warmup_batch or global_batch} clips: {warm:,} clips) is longer than the run "
                       f"({epochs} epochs of {steps_per_epoch * global_batch:,} clips: {run:,}): the learning "
                       "rate never reaches its base; lower train.warmup_iters")
    return out


def warn_schedule_misfits(cfg: TrainConfig, steps_per_epoch: int, global_batch: int) -> None:
    """One `ScheduleWarning` per `schedule_misfits` line (at the start of training)."""
    for line in schedule_misfits(cfg, steps_per_epoch, global_batch):
        warnings.warn(line, ScheduleWarning, stacklevel=2)
