"""A family's test path over the videos of an annotation subset, and the scores.

`infer_videos` runs a `tallformer.engine.family.VideoInference` over videos of an
annotation file (each decoded once, at the rate the family asks for; its outputs merged
under every result set); `evaluate` tests a model on a subset and scores it (results.json
and metrics.json). Both are the same for every family: the engine's public functions
(`tallformer.engine.infer`) and the families' testers call them with the family they have.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tallformer.engine.errors import InferenceError
from tallformer.engine.family import (
    InferenceStats,
    ResultSet,
    VideoContext,
    check_classes,
)
from tallformer.engine.results import (
    Detection,
    detection_list,
    load_ground_truth,
    results_json,
    results_table,
    score,
)
from tallformer.errors import name_list

if TYPE_CHECKING:
    import torch

    from tallformer.config import Config
    from tallformer.data.annotations import AnnotationSet, VideoAnnotation
    from tallformer.engine.family import Family, LoadedModel, VideoInference
    from tallformer.models.protocol import DetectorModel

__all__ = ["evaluate", "infer_videos", "resolve_videos", "video_duration"]

MISSING_HINT = "put them there, or test another subset (--subset)"


def resolve_videos(videos_dir: str, video_ids: Sequence[str], hint: str = MISSING_HINT) -> dict[str, Path]:
    """Every tested video's file or frame folder; one `InferenceError` naming the missing
    ones and `hint` (a missing folder is the `VideoError` of `resolve_video`)."""
    from tallformer.data.video import VideoError, resolve_video

    paths: dict[str, Path] = {}
    missing: list[str] = []
    for vid in video_ids:
        try:
            paths[vid] = resolve_video(videos_dir, vid)
        except VideoError:
            if not Path(videos_dir).is_dir():
                raise
            missing.append(vid)
    if missing:
        raise InferenceError(f"{len(missing)} of {len(video_ids)} test videos are not in "
                             f"data.videos={videos_dir} ({name_list(missing, 5)}); {hint}")
    return paths


def video_duration(video: VideoAnnotation, path: Path, n_decoded: int, fps: float) -> float:
    """The annotation's duration, else the file's own, else frames / fps (a frame folder)."""
    if video.duration:
        return float(video.duration)
    if path.is_file():
        from tallformer.data.video import probe_video
        from tallformer.errors import TallformerError

        with contextlib.suppress(TallformerError):
            return float(probe_video(path).duration)
    return n_decoded / fps


def infer_videos(inference: VideoInference, cfg: Config, videos: Sequence[VideoAnnotation],
                 result_sets: Sequence[ResultSet], *, classes: Sequence[str], progress: bool = True,
                 desc: str = "test", missing_hint: str = MISSING_HINT) -> list[dict[str, list[Detection]]]:
    """The detections of `videos` (in their order) under every result set: one
    ``{video_id: [Detection]}`` per set. Each video is found in ``cfg.data.videos``,
    decoded once at ``inference.decode_rate``, run once and merged once per set. The model
    must be in eval mode."""
    from tqdm import tqdm

    from tallformer.data.video import open_source

    if cfg.data.videos is None:
        raise InferenceError("data.videos is not set: give the folder of the test videos, "
                             "e.g. data.videos=data/thumos14/videos")
    paths = resolve_videos(str(cfg.data.videos), [v.video_id for v in videos], missing_hint)
    size = (int(cfg.data.frame_size[0]), int(cfg.data.frame_size[1]))
    results: list[dict[str, list[Detection]]] = [{} for _ in result_sets]
    bar = tqdm(videos, desc=desc, unit="video", disable=not progress or None, leave=False)
    try:
        for video in bar:
            path = paths[video.video_id]
            fps = inference.decode_rate(path, video.fps)
            source = open_source(path, fps, size)
            try:
                outputs = inference.run(source, inference.plan(len(source)), InferenceStats())
                decoded = len(source)
            finally:
                source.close()
                del source
            context = VideoContext(video.video_id, fps, decoded, video_duration(video, path, decoded, fps),
                                   video)
            for found, result_set in zip(results, result_sets, strict=True):
                found[video.video_id] = detection_list(inference.merge(outputs, context, result_set), classes)
    finally:
        bar.close()
        # no PyAV decoder may be left for a later fork (training's data workers) to free
        gc.collect()
    return results


def evaluate(family: Family, cfg: Config, model: DetectorModel,
             annotations: AnnotationSet | str | os.PathLike[str], subset: str | None = None,
             out_dir: str | os.PathLike[str] | None = None, result_set: ResultSet | None = None, *,
             classes: Sequence[str] | None = None, device: torch.device | None = None,
             progress: bool = True) -> dict[str, Any]:
    """`family`'s test path over every video of `subset` under `result_set` (default: the
    family's), scored; `tallformer.engine.infer.evaluate_model` with the family given.

    With `out_dir`, ``results.json`` and ``metrics.json`` are written there (atomically)
    and the scores are those of the written file (``tallformer eval --pred``). The model is
    put in eval mode for the run and given back in the mode it had. Returns the evaluator's
    dict (`tallformer.engine.results.score`).
    """
    from tallformer.atomic import write_json

    aset, gt = load_ground_truth(annotations)
    subset = subset if subset is not None else cfg.data.test_subset
    names = list(classes) if classes is not None else list(aset.classes)
    check_classes(model, names, str(aset.source))
    result_set = result_set if result_set is not None else family.default_results()
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        inference = family.inference(model, cfg, device)
        (found,) = infer_videos(inference, cfg, aset.subset(subset), [result_set], classes=names,
                                progress=progress)
    finally:
        model.train(was_training)
    data = results_json(found, result_set)
    pred: Any = data
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "results.json", data)
        pred = out / "results.json"
    metrics = score(gt, pred, cfg.test.tiou_thresholds, subset)
    if out_dir is not None:
        write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


class SubsetTester:
    """``tallformer test`` for a family with one result set per checkpoint (the anchor and
    ActionFormer families; `tallformer.engine.family.Tester`): each checkpoint's results and
    metrics in ``OUT/<name>/``, one row each in the table
    (`tallformer.engine.results.results_table`); `summary_keys` join ``best`` in
    ``summary.json``.

    Example:
        >>> from tallformer.config import load_config
        >>> from tallformer.engine.factory import family_for
        >>> cfg = load_config("demo")
        >>> tester = family_for(cfg).tester(cfg, {})
        >>> tester.summary([{"name": "a", "average_mAP": 0.4}, {"name": "b", "average_mAP": 0.5}])
        {'protocol': 'chunk_grid', 'best': 'b'}
    """

    def __init__(self, family: Family, summary_keys: Mapping[str, Any] | None = None) -> None:
        self.family = family
        self.summary_keys = dict(summary_keys or {})

    def describe(self) -> str:
        return ""

    def test(self, cfg: Config, loaded: LoadedModel, out_dir: Path, *, name: str, subset: str,
             progress: bool) -> list[dict[str, Any]]:
        assert cfg.data.annotations is not None  # checked by the caller
        metrics = evaluate(self.family, cfg, loaded.model, cfg.data.annotations, subset, out_dir,
                           self.family.default_results(), classes=loaded.classes,
                           device=loaded.device, progress=progress)
        return [{"name": name, "checkpoint": str(loaded.path), "epoch": loaded.epoch, "step": loaded.step,
                 "mAP": metrics["mAP"], "average_mAP": metrics["average_mAP"],
                 "results": str(out_dir / "results.json"), "metrics": str(out_dir / "metrics.json")}]

    def table(self, rows: Sequence[Mapping[str, Any]], thresholds: Sequence[float]) -> str:
        return results_table(rows, thresholds)

    def summary(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {**self.summary_keys, "best": max(rows, key=lambda r: r["average_mAP"])["name"]}
