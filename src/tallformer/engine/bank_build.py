"""Fill a memory bank by running the backbone over every training video.

What one bank row holds (original: tools/data/extract_features.py:146-179; where we differ,
the reason is given):

- The chunk grid starts at frame 0: chunk ``c`` of a video is frames ``32c .. 32c+31``
  (``model.backbone.chunk_size``), and its features are bank rows ``16c .. 16c+15``.
- Each chunk is decoded on its own (``source.read(32c, 32c+32)``, never the whole video),
  centre-cropped to ``data.crop_size`` and normalised (the test-time transform, as the
  original: tools/data/extract_features.py:123-124,166-167), and run through the backbone by
  itself (``forward_chunks``), so a row depends only on its chunk, as in the original.
- The last, partial chunk of ``f < 32`` frames is zero-padded at the end *after*
  normalisation (zero = the mean colour) and only its first ``ceil(f / 2)`` rows are kept
  (original: vedatad/models/backbones/chunk_model.py:88-124), so a video of ``N`` frames
  has ``ceil(N / 2)`` rows.
- The backbone runs in eval mode under ``torch.inference_mode()``, so a rebuild gives the
  same bank (the original builds it in train mode, where stochastic depth makes it random:
  tools/data/extract_features.py:118).
- ``N`` is the exact decoded frame count at the video's rate (its annotation's fps, else
  ``data.fps``; ``len(open_source(...))``), not a count derived from the metadata's
  duration (the original: vedatad/datasets/thumos14.py:61).

Building is resumable: every video is marked complete (``MemoryBank.mark_complete``)
only after all its rows were written; a re-run skips complete videos and redoes any
half-written one. A video that cannot be read (missing, corrupt) is reported and the
others are built; a backbone error on a batch (which may span videos) fails every video
with a chunk in it, never leaving one silently unfinished.

Each video's entry in the bank records its source (file name and size in bytes; a frame
folder's name, file count and total size), so building another dataset whose videos share
ids into an existing bank is refused, naming the videos (``overwrite=True`` rebuilds
them). The modification time is not part of it: copying a dataset changes it.

Nothing is written before the work starts: a missing videos folder, unknown ids, a bad
device or weights file, or a run where no video can be read raise ``BuildError`` and leave
no bank folder behind. Then the bank folder is held (`tallformer.engine.run_lock`: a second
build into it stops in one line naming this one), and the bank checks that its disk holds
every file before it creates them, reserving their space (`MemoryBank.create`). A file that
cannot be written (no space, permission) stops the build with one
`tallformer.errors.OutputError`; the videos finished before stay finished.

Usage::

    report = build_bank(cfg, "banks/thumos14_swin_b", weights="pretrained/swin_b.pth", device="cuda")
    print(report.summary())
    if report.failed: ...
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tallformer.config import Config, config_to_dict
from tallformer.engine.device import resolve_device
from tallformer.errors import OutputError, TallformerError, TallformerWarning, name_list

if TYPE_CHECKING:
    import torch

    from tallformer.data.video import FrameSource
    from tallformer.memory.bank import MemoryBank
    from tallformer.models.backbone import VideoSwinBackbone

__all__ = ["BuildError", "BuildReport", "build_bank", "training_videos"]


class BuildError(TallformerError, ValueError):
    """The build cannot start: config paths unset or missing, unknown video ids, a bad
    device, no readable video. The message names the key or file and the fix."""


@dataclass
class BuildReport:
    """What `build_bank` did.

    Attributes:
        out_dir: the bank folder.
        built: videos computed in this run (all rows written, marked complete).
        skipped: videos already complete in the bank (not recomputed).
        failed: video id -> error message (the video's rows are not marked complete).
        chunks: chunks run through the backbone in this run.
        frames: frames decoded (at the target fps) in this run.
        seconds: wall time of the build.
    """

    out_dir: Path
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    chunks: int = 0
    frames: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no video failed."""
        return not self.failed

    def summary(self) -> str:
        """A few human-readable lines: counts, speed, and every failure."""
        speed = f", {self.chunks / self.seconds:.2f} chunks/s" if self.seconds > 0 and self.chunks else ""
        lines = [
            f"memory bank {self.out_dir}: {len(self.built)} built, {len(self.skipped)} skipped "
            f"(already complete), {len(self.failed)} failed; {self.chunks} chunks / "
            f"{self.frames} frames in {self.seconds:.1f} s{speed}"
        ]
        if self.failed:
            lines.append("failed videos (fix them and re-run the same command; finished videos "
                         "are skipped):")
            lines.extend(f"  {vid}: {msg}" for vid, msg in self.failed.items())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


# --------------------------------------------------------------------------- helpers


def training_videos(cfg: Config) -> list[str]:
    """Ids of the videos of ``data.train_subset`` in ``data.annotations`` (file order)."""
    return list(_training_rates(cfg))


def _training_rates(cfg: Config) -> dict[str, float]:
    """``{video_id: fps}`` of the training subset, decoded at the rate the dataset uses
    (the annotation's own fps when it has one, else ``data.fps``)."""
    from tallformer.data.annotations import load_annotations, video_fps

    if not cfg.data.annotations:
        raise BuildError(
            "data.annotations is not set; give the annotation JSON in the config or as "
            "data.annotations=FILE on the command line"
        )
    aset = load_annotations(cfg.data.annotations)
    return {v.video_id: video_fps(v, cfg.data) for v in aset.subset(cfg.data.train_subset)}


def _make_backbone(cfg: Config, weights: str | None) -> VideoSwinBackbone:
    """The configured backbone with `weights` loaded; with no weights, a random init seeded
    by ``cfg.seed`` (so an interrupted build resumes with the same network)."""
    import torch

    from tallformer.models.backbone import build_backbone_from_config
    from tallformer.models.weights import load_backbone_weights

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        backbone = build_backbone_from_config(cfg.model.backbone)
    if weights is not None:
        if not Path(weights).is_file():
            raise BuildError(f"backbone weights file {weights} not found (--weights / "
                             "model.backbone.weights)")
        load_backbone_weights(backbone, weights)
    else:
        warnings.warn(
            "no backbone weights given (--weights / model.backbone.weights): the bank holds "
            f"features of a randomly initialised backbone (seed {cfg.seed})",
            TallformerWarning,
            stacklevel=3,
        )
    return backbone


def _chunk_rows(frames: int, stride: int) -> int:
    """Rows of a chunk of ``frames`` real frames: ceil(frames / stride) (the padded chunk's
    last floor(pad / stride) rows are dropped, as the original:
    vedatad/models/backbones/chunk_model.py:119)."""
    return math.ceil(frames / stride)


def _source_record(path: Path) -> dict[str, Any]:
    """What a video's rows are computed from, as its bank entry records it: a file's name
    and size; a frame folder's name, number of files and their total size."""
    if path.is_dir():
        sizes = [e.stat().st_size for e in os.scandir(path) if e.is_file()]
        return {"name": f"{path.name}/", "files": len(sizes), "bytes": sum(sizes)}
    return {"name": path.name, "bytes": path.stat().st_size}


@dataclass
class _Job:
    """One chunk waiting for the backbone."""

    video: str
    chunk: int
    rows: int  # rows to keep (< rows_per_chunk only for the last, partial chunk)
    clip: Any  # float32 tensor [3, chunk, crop, crop]


class _Builder:
    """Runs batches of chunks through the backbone and writes their rows."""

    def __init__(self, bank: MemoryBank, backbone: VideoSwinBackbone, device: torch.device,
                 batch_chunks: int, report: BuildReport, progress: Any) -> None:
        self.bank = bank
        self.backbone = backbone
        self.device = device
        self.batch_chunks = batch_chunks
        self.report = report
        self.progress = progress
        self.pending: list[_Job] = []
        self.remaining: dict[str, int] = {}  # video -> chunks not yet written
        self.rows_per_chunk = bank.rows_per_chunk

    def start(self, video: str, num_chunks: int) -> None:
        self.remaining[video] = num_chunks

    def failed(self, video: str) -> bool:
        """Whether ``video`` failed (its remaining chunks are skipped)."""
        return video not in self.remaining

    def add(self, job: _Job) -> None:
        if self.failed(job.video):
            return
        self.pending.append(job)
        if len(self.pending) >= self.batch_chunks:
            self.flush()

    def fail(self, video: str, message: str) -> None:
        """Report ``video`` failed and drop its queued chunks (its rows stay incomplete)."""
        self.report.failed.setdefault(video, message)
        self.pending = [j for j in self.pending if j.video != video]
        lost = self.remaining.pop(video, 0)  # chunks that will not go through the backbone
        self.progress.total = max(self.progress.n, self.progress.total - lost)
        self.progress.refresh()

    def flush(self) -> None:
        if not self.pending:
            return
        import torch

        jobs, self.pending = self.pending, []
        try:
            batch = torch.stack([j.clip for j in jobs]).to(self.device)  # [N, 3, chunk, h, w]
            feats = self.backbone.forward_chunks(batch)  # [N, C, chunk / stride]
        except Exception as exc:
            message = f"the backbone failed on a batch of its chunks: {_message(exc)}"
            for video in dict.fromkeys(j.video for j in jobs):
                self.fail(video, message)
            return
        rows = feats.float().cpu().transpose(1, 2).numpy()  # [N, rows_per_chunk, C]
        for job, f in zip(jobs, rows, strict=True):
            # chunk c -> rows 16c .. 16c + rows - 1
            self.bank.write(job.video, job.chunk * self.rows_per_chunk, f[: job.rows])
            self.report.chunks += 1
            self.remaining[job.video] -= 1
            if self.remaining[job.video] == 0:
                del self.remaining[job.video]
                self.bank.mark_complete(job.video)  # flushes the rows first
                self.report.built.append(job.video)
        self.progress.update(len(jobs))


# --------------------------------------------------------------------------- build


def build_bank(
    cfg: Config,
    out_dir: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    batch_chunks: int = 8,
    videos: Sequence[str] | None = None,
    backbone: VideoSwinBackbone | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Build (or resume building) the memory bank of ``cfg``'s training videos in ``out_dir``.

    Args:
        cfg: the run config: ``data.annotations`` / ``data.train_subset`` pick the videos,
            ``data.videos``, ``data.fps``, ``data.frame_size``, ``data.crop_size``,
            ``data.mean``/``std`` the frames, ``model.backbone`` the network,
            ``memory.dtype`` the storage type.
        out_dir: the bank folder (created; an existing bank there is resumed: it must have
            been built with the same backbone config, weights, dtype and fps, from the same
            video files).
        weights: backbone checkpoint (official / torchvision / tallformer); default
            ``model.backbone.weights``. None of both: random init seeded by ``cfg.seed``
            (a warning).
        device: where the backbone runs ("cpu", "cuda", "cuda:1", "auto").
        batch_chunks: chunks per backbone call (batches may span videos).
        videos: build only these training video ids (default: every training video).
        backbone: use this backbone instead of building one from the config (e.g. the one
            being trained); it is moved to ``device`` and run in eval mode (its train/eval
            mode is restored afterwards); ``weights`` is then only recorded in the meta.
        overwrite: rebuild the videos already in the bank whose frame count or source file
            differs from the videos now (without it, such videos are an error).
        progress: show tqdm bars (counting frames, then chunks).

    Returns:
        A `BuildReport`. Videos that cannot be read are in ``report.failed`` and are not
        marked complete; every other video is complete in the bank.

    Raises:
        BuildError: unset or missing paths, unknown ids, unusable device, bad
            ``batch_chunks``, no readable video (nothing is written then).
        BankError: ``out_dir`` holds a bank built with other settings or from other video
            files (without ``overwrite``), or is another folder.
        FolderInUse: another build holds ``out_dir`` (`tallformer.engine.run_lock`).
        OutputError: the disk cannot hold the bank (before any file is created), or a file
            cannot be written (the videos finished before stay finished).
    """
    t0 = time.perf_counter()
    videos_dir = _check_inputs(cfg, batch_chunks)
    dev = resolve_device(device, what="--device")
    rates = _training_rates(cfg)
    ids = _wanted_ids(cfg, list(rates), videos)

    bb_cfg = cfg.model.backbone
    weights_path = str(weights) if weights is not None else bb_cfg.weights
    chunk = bb_cfg.chunk_size  # 32 frames per chunk (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:8)
    report = BuildReport(out_dir=Path(out_dir))
    if backbone is None:
        backbone = _make_backbone(cfg, weights_path)
    stride = int(backbone.temporal_stride)  # 2 frames per row (original: the same config, line 15)
    if chunk % stride:
        raise BuildError(f"model.backbone.chunk_size {chunk} is not a multiple of the backbone's "
                         f"temporal stride {stride}")

    counted = _count_frames(cfg, videos_dir, ids, rates, report, progress)
    if ids and not counted:
        vid, message = next(iter(report.failed.items()))
        raise BuildError(
            f"none of the {len(ids)} training videos could be read (the first, {vid}: {message}); "
            "check data.videos and the ids in data.annotations (no bank was written)"
        )
    from tallformer.engine.run_lock import hold_folder

    was_training = backbone.training
    try:
        backbone = backbone.to(dev).eval()
        with hold_folder(out_dir, "tallformer bank build", option="--out"):
            bank = _output_bank(cfg, out_dir, counted, backbone.num_features, stride, weights_path,
                                overwrite)
            try:
                todo = [vid for vid in counted if not bank.is_complete(vid)]
                report.skipped.extend(vid for vid in counted if bank.is_complete(vid))
                _build_videos(cfg, bank, backbone, dev, batch_chunks, todo, counted, rates, stride,
                              report, progress)
            finally:
                bank.close()
    finally:
        backbone.train(was_training)
    report.seconds = time.perf_counter() - t0
    return report


def _check_inputs(cfg: Config, batch_chunks: int) -> Path:
    """Checks made before any work; returns the videos folder."""
    if isinstance(batch_chunks, bool) or not isinstance(batch_chunks, int) or batch_chunks < 1:
        raise BuildError(f"batch_chunks must be an integer >= 1, got {batch_chunks!r}")
    if not cfg.data.videos:
        raise BuildError(
            "data.videos is not set; give the folder of videos (or frame folders) in the "
            "config or as data.videos=DIR on the command line"
        )
    if not Path(cfg.data.videos).is_dir():
        raise BuildError(
            f"data.videos: folder {cfg.data.videos} does not exist; give the folder of videos "
            "(or frame folders) as data.videos=DIR (nothing was built)"
        )
    return Path(cfg.data.videos)


def _wanted_ids(cfg: Config, ids: list[str], videos: Sequence[str] | None) -> list[str]:
    """The training ids to build: all, or those of ``videos`` (in annotation file order)."""
    if videos is None:
        return ids
    known = set(ids)
    unknown = [v for v in videos if v not in known]
    if unknown:
        raise BuildError(
            f"video id(s) {name_list(unknown)} are not in subset {cfg.data.train_subset!r} of "
            f"{cfg.data.annotations} ({len(ids)} videos); check the ids or data.train_subset"
        )
    wanted = set(videos)
    return [v for v in ids if v in wanted]


@dataclass
class _Video:
    """A training video that could be opened: its file, exact frame count and source record."""

    path: Path
    frames: int
    source: dict[str, Any]


def _count_frames(cfg: Config, videos_dir: Path, ids: list[str], rates: dict[str, float],
                  report: BuildReport, progress: bool) -> dict[str, _Video]:
    """Exact frame counts (a demux-only pass per video file; no decoding). A video that
    cannot be opened goes to ``report.failed``."""
    from tqdm import tqdm

    from tallformer.data.video import open_source, resolve_video

    size = (int(cfg.data.frame_size[0]), int(cfg.data.frame_size[1]))
    counted: dict[str, _Video] = {}
    for vid in tqdm(ids, desc="counting frames", unit="video", disable=not progress or not ids,
                    leave=False):
        try:
            path = resolve_video(videos_dir, vid)
            source = open_source(path, rates[vid], size)
            try:
                n = len(source)
            finally:
                source.close()
            if n < 1:
                raise BuildError(f"{path}: no frames at {rates[vid]:g} fps")
            counted[vid] = _Video(path, n, _source_record(path))
        except Exception as exc:
            report.failed[vid] = _message(exc)
    return counted


def _output_bank(cfg: Config, out_dir: str | os.PathLike[str], counted: dict[str, _Video],
               feature_dim: int, stride: int, weights_path: str | None,
               overwrite: bool) -> MemoryBank:
    """Create the bank, or reopen it to resume (same settings and video files required)."""
    from tallformer.memory.bank import MemoryBank

    bb_dict = config_to_dict(cfg.model.backbone)
    bb_dict["weights"] = weights_path
    return MemoryBank.create(
        out_dir, {v: c.frames for v, c in counted.items()}, feature_dim, dtype=cfg.memory.dtype,
        frames_per_row=stride, chunk_size=cfg.model.backbone.chunk_size,
        fps=float(cfg.data.fps),  # nominal, recorded in meta; each video decodes at its own rate
        backbone=bb_dict, weights=weights_path, exist_ok=True,
        sources={v: c.source for v, c in counted.items()}, overwrite=overwrite,
    )


def _build_videos(cfg: Config, bank: MemoryBank, backbone: VideoSwinBackbone,
                  device: torch.device, batch_chunks: int, todo: list[str],
                  counted: dict[str, _Video], rates: dict[str, float], stride: int,
                  report: BuildReport, progress: bool) -> None:
    """Chunk by chunk over the unfinished videos."""
    import torch
    from tqdm import tqdm

    chunk = cfg.model.backbone.chunk_size
    total_chunks = sum(math.ceil(counted[v].frames / chunk) for v in todo)
    bar = tqdm(total=total_chunks, desc="building bank", unit="chunk",
               disable=not progress or not total_chunks)
    builder = _Builder(bank, backbone, device, batch_chunks, report, bar)
    try:
        with torch.inference_mode():
            for vid in todo:
                bar.set_postfix_str(vid, refresh=False)
                try:
                    _queue_video(cfg, builder, vid, counted[vid], rates[vid], stride)
                except OutputError:
                    raise  # the bank's disk or folder: every other video would fail too
                except Exception as exc:
                    builder.fail(vid, _message(exc))
            builder.flush()
    finally:
        bar.close()


def _queue_video(cfg: Config, builder: _Builder, vid: str, video: _Video, fps: float,
                 stride: int) -> None:
    """Decode, transform and queue every chunk of one video (the builder runs the batches)."""
    import torch

    from tallformer.data.transforms import test_transform
    from tallformer.data.video import open_source

    data = cfg.data
    chunk = cfg.model.backbone.chunk_size
    n = video.frames
    num_chunks = math.ceil(n / chunk)
    builder.start(vid, num_chunks)
    source: FrameSource = open_source(video.path, fps, (int(data.frame_size[0]), int(data.frame_size[1])))
    try:
        if len(source) != n:
            raise BuildError(f"{video.path}: {len(source)} frames now, {n} when counted; did "
                             "the file change?")
        for c in range(num_chunks):
            if builder.failed(vid):  # its backbone batch failed
                break
            lo, hi = c * chunk, min((c + 1) * chunk, n)
            frames = source.read(lo, hi)  # uint8 [hi - lo, H, W, 3]
            clip = test_transform(frames, data.crop_size, data.mean, data.std)  # [3, hi - lo, crop, crop]
            if hi - lo < chunk:  # zero-pad after normalisation (zero = the mean colour)
                clip = torch.nn.functional.pad(clip, (0, 0, 0, 0, 0, chunk - (hi - lo)))
            builder.report.frames += hi - lo
            builder.add(_Job(vid, c, _chunk_rows(hi - lo, stride), clip))
    finally:
        source.close()


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, (TallformerError, ValueError)) and type(exc).__name__ not in (
            "VideoError", "AnnotationError"):
        text = f"{type(exc).__name__}: {text}"
    return text
