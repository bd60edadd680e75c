"""The bank a training run works on: validated, copied into the run directory, recorded.

The original edits the user's bank in place and its README tells users to copy it by hand
before every run (the bank path of configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:178-179
is the copy; vedatad/engines/train_engine.py:121-139 writes into it). Here a run validates the bank against
its training videos and config before any step, then trains on its own copy in
`RUN_DIR/bank/` (made once, atomically, and reused on resume), and records in
`RUN_DIR/bank.json` which bank it started from (path and meta fingerprint). With
`memory.in_place: true` (`--bank-in-place`) it trains on the user's bank directly.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from tallformer.atomic import write_text
from tallformer.config import Config
from tallformer.data.annotations import AnnotationSet
from tallformer.errors import TallformerWarning
from tallformer.memory.bank import BankError, MemoryBank

__all__ = ["RUN_BANK_DIR", "RUN_BANK_RECORD", "open_training_bank", "training_frame_counts"]

RUN_BANK_DIR = "bank"
RUN_BANK_RECORD = "bank.json"


def training_frame_counts(cfg: Config, annotations: AnnotationSet) -> dict[str, int]:
    """`{video_id: frames}` of the training subset, decoded at the rate the dataset uses
    (the annotation's own fps when it has one, else data.fps), from the videos themselves."""
    from tallformer.data.annotations import video_fps
    from tallformer.data.video import open_source, resolve_video

    if cfg.data.videos is None:
        raise BankError("data.videos is not set: the bank is checked against the training videos")
    counts: dict[str, int] = {}
    size = (cfg.data.frame_size[0], cfg.data.frame_size[1])
    for video in annotations.subset(cfg.data.train_subset):
        path = resolve_video(cfg.data.videos, video.video_id)
        src = open_source(path, video_fps(video, cfg.data), size)
        try:
            counts[video.video_id] = len(src)
        finally:
            src.close()
    return counts


def open_training_bank(
    cfg: Config,
    run_dir: str | os.PathLike[str],
    frame_counts: dict[str, int],
    feature_dim: int,
) -> MemoryBank:
    """Validate `memory.bank_dir` and return the bank this run trains on (mode "r+").

    Args:
        frame_counts: `{video_id: frames}` of every training video (see
            `training_frame_counts`); each must be in the bank with matching rows.
        feature_dim: the backbone's output channels C.
    Raises:
        BankError naming the bank, the video and the numbers on any mismatch, or when a
        resumed run finds a different bank than the one it started from.
    """
    if cfg.memory.bank_dir is None:
        raise BankError(
            "memory.bank_dir is not set; build a bank with 'tallformer bank build --config ... "
            "--out DIR' and pass memory.bank_dir=DIR"
        )
    source = MemoryBank.open(cfg.memory.bank_dir, mode="r", videos=frame_counts,
                             feature_dim=feature_dim, dtype=cfg.memory.dtype, fps=cfg.data.fps)
    if not _same_file(source.weights, cfg.model.backbone.weights):
        # cached features of another network would silently disagree with the fresh ones
        warnings.warn(
            f"{cfg.memory.bank_dir}: the bank was built from backbone weights {source.weights} "
            f"but model.backbone.weights is {cfg.model.backbone.weights}; rebuild the bank "
            "with 'tallformer bank build --weights ...' if they are not the same network",
            TallformerWarning,
            stacklevel=2,
        )
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    record_path = run / RUN_BANK_RECORD
    record: dict[str, Any] = {
        "source": str(Path(cfg.memory.bank_dir).resolve()),
        "fingerprint": source.fingerprint(),
        "in_place": bool(cfg.memory.in_place),
    }
    if record_path.is_file():
        try:
            previous = json.loads(record_path.read_text())
        except (OSError, ValueError) as e:
            raise BankError(f"{record_path}: cannot read this run's bank record ({e}); "
                            "use a new run_dir") from None
        if previous.get("fingerprint") != record["fingerprint"] or previous.get("in_place") != record["in_place"]:
            raise BankError(
                f"{run}: this run started from bank {previous.get('source')} (fingerprint "
                f"{str(previous.get('fingerprint'))[:12]}, in_place={previous.get('in_place')}) but now "
                f"memory.bank_dir={cfg.memory.bank_dir} (fingerprint {record['fingerprint'][:12]}, "
                f"in_place={record['in_place']}); resume with the same bank or use a new run_dir"
            )
    if cfg.memory.in_place:
        bank = MemoryBank.open(cfg.memory.bank_dir, mode="r+")
        record["path"] = record["source"]
    else:
        bank = source.copy_to(run / RUN_BANK_DIR, mode="r+")
        record["path"] = str((run / RUN_BANK_DIR).resolve())
    source.close()
    write_text(record_path, json.dumps(record, indent=2))  # no trailing newline, as before
    return bank


def _same_file(a: str | None, b: str | None) -> bool:
    """Two spellings of one weights file (or both unset): ``./x.pth`` and its absolute path
    are the same file."""
    if a is None or b is None or a == b:
        return a == b
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
