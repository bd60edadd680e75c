"""Import a memory bank of the original release: its raw float32 memmaps become our bank.

The original's bank folder (original: tools/data/extract_features.py:84,176-193 for
THUMOS14, tools/data/anet/extract_features.py:153-177 for ActivityNet):

- one headerless file per video, ``<video>.mmap``: little-endian float32, C order,
  ``[R, C]`` with ``R = ceil(num_frames / 2)`` (row r = frames 2r, 2r+1, chunks from frame 0);
- a side JSON (``meta_val.json`` beside THUMOS14's ``val/`` folder, ``meta.json`` inside
  ActivityNet's) mapping each video to ``{"num_frames": N, "feat_shape": [R, C]}``, the
  only place the shape is written (original: vedatad/engines/train_engine.py:54-55,95).

Our layout (`tallformer.memory.bank`) holds the same rows in the same order, fp16 by
default, so an import is a validated copy. Every video is checked against the meta (a
file of ``R * C * 4`` bytes, ``R = ceil(N / 2)``), the config (``C`` = the backbone's
feature dim) and the annotations (``data.annotations``, its ``data.train_subset``: the
video is one of them and ``N`` fits its duration times its fps). Videos that do not fit
are listed, one line per kind of problem, and left out; a video that fails while being
copied is reported and the others go on. Each video is marked complete after its rows are
written, so a re-run of the same import skips the finished ones (an interrupted import is
resumed, never redone from scratch). Each video's entry in ``meta.json`` records where it
came from: ``source = {"name": "<video>.mmap", "bytes": ..., "imported_from": ORIG_DIR}``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tallformer.config import Config, config_to_dict
from tallformer.errors import TallformerError, name_list
from tallformer.memory.bank import DTYPES, BankError, MemoryBank

__all__ = ["BankImportError", "ImportReport", "import_bank"]

_BLOCK_ROWS = 8192  # rows copied per slice (32 MiB of float32 for C = 1024)


class BankImportError(TallformerError, ValueError):
    """The import cannot start: no meta file, an unreadable one, no annotations, nothing
    that fits. The message names the file or key and the fix."""


@dataclass
class ImportReport:
    """What `import_bank` did.

    Attributes:
        out_dir: our bank folder.
        imported: videos copied in this run (marked complete).
        skipped: videos already complete in `out_dir` (not copied again).
        rejected: problem -> videos that do not fit (left out of the bank).
        ignored: videos of the original bank outside ``data.train_subset`` (left out).
        failed: video -> error while copying (not marked complete).
        rows: rows copied in this run. seconds: wall time.
    """

    out_dir: Path
    source: Path
    meta_file: Path
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rejected: dict[str, list[str]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every training video of the original bank is in ours."""
        return not self.rejected and not self.failed

    def summary(self) -> str:
        lines = [f"memory bank {self.out_dir} from {self.source} ({self.meta_file.name}): "
                 f"{len(self.imported)} imported, {len(self.skipped)} already there, "
                 f"{sum(len(v) for v in self.rejected.values())} rejected, {len(self.failed)} failed; "
                 f"{self.rows:,} rows in {self.seconds:.1f} s"]
        for problem, videos in self.rejected.items():
            lines.append(f"  {problem} ({len(videos)}): {name_list(videos, 8)}")
        for video, message in self.failed.items():
            lines.append(f"  failed while copying {video}: {message}")
        if self.ignored:
            lines.append(f"  not in the training subset, left out ({len(self.ignored)}): "
                         f"{name_list(self.ignored, 8)}")
        return "\n".join(lines)


def find_meta(orig_dir: Path) -> Path:
    """The original's side JSON: ``meta*.json`` in `orig_dir`, else beside it (THUMOS14's
    ``meta_val.json`` next to ``val/``); exactly one candidate, else an error asking for
    ``--meta``."""
    for folder in (orig_dir, orig_dir.parent):
        found = sorted(folder.glob("meta*.json"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise BankImportError(f"{folder}: several meta files ({name_list([p.name for p in found])}); "
                               "choose one with --meta FILE")
    raise BankImportError(f"{orig_dir}: no meta*.json in it or beside it (the original writes meta_val.json "
                       "or meta.json with each video's feat_shape); give it with --meta FILE")


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BankImportError(f"{path}: cannot read the original bank's meta ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise BankImportError(f"{path}: expected {{video: {{num_frames, feat_shape}}}}, got "
                           f"{type(data).__name__ if not isinstance(data, dict) else 'an empty dict'}")
    return data


def _entry(value: Any) -> tuple[int, int, int] | None:
    """(num_frames, rows, dim) of a meta entry, None when malformed."""
    if not isinstance(value, dict):
        return None
    n, shape = value.get("num_frames"), value.get("feat_shape")
    if (not isinstance(n, int) or isinstance(n, bool) or n < 1 or not isinstance(shape, list)
            or len(shape) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                          for x in shape)):
        return None
    return n, int(shape[0]), int(shape[1])


def _feature_dim(cfg: Config) -> int:
    import torch

    from tallformer.models.backbone import build_backbone_from_config

    with torch.device("meta"):
        return int(build_backbone_from_config(cfg.model.backbone).num_features)


def _training_videos(cfg: Config) -> dict[str, tuple[float | None, float]]:
    """``{video_id: (duration, fps)}`` of ``data.train_subset``."""
    from tallformer.data.annotations import load_annotations, video_fps

    if not cfg.data.annotations:
        raise BankImportError("data.annotations is not set; give the annotation JSON the bank's videos "
                           "belong to in the config or as data.annotations=FILE")
    aset = load_annotations(cfg.data.annotations)
    return {v.video_id: (v.duration, video_fps(v, cfg.data)) for v in aset.subset(cfg.data.train_subset)}


def _annotation_id(name: str, ids: dict[str, Any]) -> str | None:
    """The annotation id of a bank file name (ActivityNet names carry a ``v_`` prefix or not)."""
    for cand in (name, name[2:] if name.startswith("v_") else f"v_{name}"):
        if cand in ids:
            return cand
    return None


def _check_videos(meta: dict[str, Any], meta_path: Path, src: Path, dim: int,
                  train: dict[str, tuple[float | None, float]],
                  report: ImportReport) -> dict[str, tuple[str, int, int]]:
    """The videos that fit, ``{id: (file name, num_frames, rows)}``; the others go to
    `report` (``rejected`` by problem, ``ignored`` outside the training subset)."""

    def reject(problem: str, video: str) -> None:
        report.rejected.setdefault(problem, []).append(video)

    wanted: dict[str, tuple[str, int, int]] = {}
    seen: set[str] = set()
    for name, value in meta.items():
        vid = _annotation_id(str(name), train)
        if vid is None:
            report.ignored.append(str(name))
            continue
        seen.add(vid)
        entry = _entry(value)
        if entry is None:
            reject(f"malformed entry in {meta_path.name} (need num_frames and feat_shape [R, C])", vid)
            continue
        n, rows, c = entry
        file = src / f"{name}.mmap"
        duration, fps = train[vid]
        if c != dim:
            reject(f"feature dim in {meta_path.name} is not the config's backbone's {dim}", vid)
        elif rows != math.ceil(n / 2):
            reject("feat_shape rows != ceil(num_frames / 2)", vid)
        elif not file.is_file():
            reject(f"no {src.name}/<video>.mmap file", vid)
        elif file.stat().st_size != rows * c * 4:
            reject("file size != rows x dim x 4 bytes (float32 feat_shape of the meta)", vid)
        elif duration and abs(n - duration * fps) > max(fps, 0.02 * n):
            reject("num_frames far from the annotation's duration x fps (more than 1 s or 2%)", vid)
        else:
            wanted[vid] = (str(name), n, rows)
    for vid in train:
        if vid not in seen:
            reject(f"training videos missing from {meta_path.name}", vid)
    return wanted


def _copy_video(bank: MemoryBank, path: Path, vid: str, rows: int, dim: int, dtype: str,
                bar: Any) -> None:
    """The rows of one original memmap `path` ``[rows, dim]`` float32 into `bank`, in slices."""
    raw = np.memmap(path, dtype="<f4", mode="r", shape=(rows, dim))
    try:
        for lo in range(0, rows, _BLOCK_ROWS):
            block = np.asarray(raw[lo:lo + _BLOCK_ROWS]).astype(dtype)
            if not np.isfinite(block).all():
                raise ValueError(f"rows {lo}..{lo + len(block) - 1} hold values that are not finite "
                                 + ("in float16 (too large; import with --dtype float32)"
                                    if dtype == "float16" else "(NaN or inf in the original)"))
            bank.write(vid, lo, block)
            bar.update(len(block))
    finally:
        del raw


def import_bank(cfg: Config, orig_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                meta_file: str | os.PathLike[str] | None = None, dtype: str | None = None,
                progress: bool = True) -> ImportReport:
    """Copy the original's bank at `orig_dir` into our bank at `out_dir`.

    Args:
        cfg: the config the bank is for: ``model.backbone`` (feature dim, recorded in
            meta.json), ``model.backbone.chunk_size``, ``data.fps``, ``data.annotations`` and
            ``data.train_subset`` (the videos it must hold).
        meta_file: the side JSON (default `find_meta`).
        dtype: "float16" (default: ``memory.dtype``) or "float32".
    Returns an `ImportReport`; raises `BankImportError` before writing anything when the
    inputs cannot be used (no meta, no annotations, no video that fits).
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    src, out = Path(orig_dir), Path(out_dir)
    if not src.is_dir():
        raise BankImportError(f"{src}: not a folder (give the original's bank folder of <video>.mmap files)")
    dtype = dtype or cfg.memory.dtype
    if dtype not in DTYPES:
        raise BankImportError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    meta_path = Path(meta_file) if meta_file is not None else find_meta(src)
    meta = _read_meta(meta_path)
    dim = _feature_dim(cfg)
    train = _training_videos(cfg)
    report = ImportReport(out_dir=out, source=src, meta_file=meta_path)

    wanted = _check_videos(meta, meta_path, src, dim, train, report)
    if not wanted:
        problems = "; ".join(report.summary().split("\n")[1:]) or "the meta lists no training video"
        raise BankImportError(f"{src}: no video of the original bank fits ({problems}); check --meta, "
                              "--config and data.annotations")

    bb = config_to_dict(cfg.model.backbone)
    try:
        bank = MemoryBank.create(
            out, {v: n for v, (_, n, _) in wanted.items()}, dim, dtype=dtype,
            frames_per_row=2, chunk_size=cfg.model.backbone.chunk_size, fps=float(cfg.data.fps),
            backbone=bb, weights=None, exist_ok=True,
            sources={v: {"name": f"{name}.mmap", "bytes": rows * dim * 4,
                         "imported_from": str(src.resolve())} for v, (name, _, rows) in wanted.items()},
        )
    except BankError as exc:
        raise BankImportError(str(exc)) from None
    todo = [v for v in wanted if not bank.is_complete(v)]
    report.skipped = [v for v in wanted if v not in todo]
    bar = tqdm(total=sum(wanted[v][2] for v in todo), desc="importing bank", unit="row",
               disable=not progress or not todo, leave=False)
    try:
        for vid in todo:
            name, _, rows = wanted[vid]
            try:
                _copy_video(bank, src / f"{name}.mmap", vid, rows, dim, dtype, bar)
                bank.mark_complete(vid)
                report.imported.append(vid)
                report.rows += rows
            except (OSError, ValueError, BankError) as exc:
                report.failed[vid] = str(exc)
    finally:
        bar.close()
        bank.close()
    report.seconds = time.perf_counter() - t0
    return report
