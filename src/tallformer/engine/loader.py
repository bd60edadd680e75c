"""The training data pipeline of a memory-bank run: dataset, video-exclusive sampler, loader.

The data workers choose each sample's kept chunks (``memory.keep_ratio``, drawn per
``(seed, rank, epoch, index)``), decode and augment only those chunks' frames, and read the
dropped chunks' rows from the bank, so bank reads overlap the step. A worker reads rows up
to ``num_workers x prefetch_factor`` batches ahead of the step that uses them; a video
appears once per epoch, so those rows are never rows the steps in between write.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader

from tallformer.config import ConfigError
from tallformer.data.dataset import TrainDataset, collate_train
from tallformer.data.sampler import VideoExclusiveSampler
from tallformer.memory.bank import BankError
from tallformer.memory.selection import make_chunk_selector, num_kept

if TYPE_CHECKING:
    from tallformer.config import Config
    from tallformer.data.annotations import AnnotationSet
    from tallformer.memory.bank import MemoryBank

__all__ = ["TrainLoader", "make_train_loader"]


@dataclass
class TrainLoader:
    """The training dataset, its ``VideoExclusiveSampler`` and the ``DataLoader`` over them.

    Call ``set_epoch(epoch)`` before each epoch (reshuffles, re-draws windows, chunks and
    augmentation); iterate for ``collate_train`` batches; ``len`` is the steps per epoch.
    """

    dataset: TrainDataset
    sampler: VideoExclusiveSampler
    loader: DataLoader

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.sampler)


def make_train_loader(
    cfg: Config,
    annotations: AnnotationSet,
    bank: MemoryBank | None,
    *,
    classes: list[str] | None = None,
    videos_dir: str | Path | None = None,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int | None = None,
    batch_size: int | None = None,
    pin_memory: bool = False,
) -> TrainLoader:
    """The training data pipeline of a memory-bank run.

    ``TrainDataset`` with ``chunk_selector = make_chunk_selector(memory.keep_ratio,
    memory.mode)`` and ``feature_reader = bank.read_chunks`` (read in the workers; only
    called for dropped chunks, so ``keep_ratio = 1`` never reads), a
    ``VideoExclusiveSampler`` over the dataset's videos (``rank`` of ``world_size``, seeded
    by ``cfg.seed``) and a ``DataLoader`` with ``data.num_workers`` workers (not persistent:
    each epoch's workers copy the dataset after ``set_epoch``).

    Args:
        classes: class names (default: ``annotations.classes``).
        videos_dir: default ``data.videos``.
        num_workers, batch_size: override ``data.num_workers`` / ``data.batch_size``.
    """
    keep_ratio = cfg.memory.keep_ratio
    chunk_size = cfg.model.backbone.chunk_size
    num_chunks = cfg.data.num_frames // chunk_size
    if bank is None and num_kept(num_chunks, keep_ratio) < num_chunks:
        raise ConfigError(
            f"memory.keep_ratio = {keep_ratio} drops chunks, whose features come from the memory "
            "bank, but no bank was given; set memory.bank_dir (build one with `tallformer bank "
            "build`) or use memory.keep_ratio=1"
        )
    if bank is not None and bank.chunk_size != chunk_size:
        raise BankError(
            f"memory bank {bank.root} was built with chunks of {bank.chunk_size} frames but "
            f"model.backbone.chunk_size is {chunk_size}; rebuild the bank with this config"
        )
    videos = videos_dir if videos_dir is not None else cfg.data.videos
    if videos is None:
        raise ConfigError("data.videos is not set: give the folder of training videos "
                          "(data.videos=DIR)")
    dataset = TrainDataset(
        annotations,
        videos,
        cfg.data,
        list(classes) if classes is not None else list(annotations.classes),
        chunk_size=chunk_size,
        chunk_selector=make_chunk_selector(keep_ratio, cfg.memory.mode),
        feature_reader=bank.read_chunks if bank is not None else None,
        seed=cfg.seed,
        rank=rank,
    )
    sampler = VideoExclusiveSampler(
        [v.video_id for v in dataset.videos],
        batch_size if batch_size is not None else cfg.data.batch_size,
        rank=rank,
        world_size=world_size,
        seed=cfg.seed,
        shuffle=True,
        drop_last=False,
    )
    workers = cfg.data.num_workers if num_workers is None else num_workers
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_train,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
    )
    return TrainLoader(dataset, sampler, loader)
