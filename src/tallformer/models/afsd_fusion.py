"""Video-level label fusion for the ActivityNet detector's class-agnostic proposals
(original: AFSD/anet_video_cls/test.py:210-241).

Every proposal (segment, score p) becomes one detection per video-level label (l, q), with
score p * q. Three sources of video labels (`tallformer test --classifier ...`):

- ``builtin``: the detector's own action head, top-2 of its softmax (`builtin_video_labels`);
- a classifier FILE in the format the original reads, ``{"results": {video: [K scores]},
  "class": [K names]}`` (the CUHK ActivityNet-2016 validation file that BSN / BMN / AFSD
  use), top-2 (`VideoClassifier`, `load_video_classifier`);
- ``gt``: the video's ground-truth label (its first annotation) with score 1: an oracle,
  an upper bound not comparable with published numbers (`gt_video_labels`).

Label ids are indices into the config's class list (`model.num_classes` actions).
`label_proposals` is the whole step for one video: frames to seconds, clipped, fused, sorted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from tallformer.errors import TallformerError, name_list
from tallformer.models.outputs import Detections

__all__ = [
    "ClassifierError",
    "VideoClassifier",
    "builtin_video_labels",
    "fuse_labels",
    "fuse_video",
    "gt_video_labels",
    "label_proposals",
    "load_video_classifier",
    "score_video_labels",
]


class ClassifierError(TallformerError, ValueError):
    """A video-level classifier file that cannot be used (the message names the file)."""


def builtin_video_labels(action_probs: Tensor, top_k: int = 2,
                         include_background: bool = False) -> tuple[Tensor, Tensor]:
    """Top-k video labels of the action head: `action_probs [K + 1]` (softmax, index 0
    background) -> (labels `[k]` class ids, scores `[k]` their probabilities).

    Ours: the top-k of the K actions (probabilities not renormalised). With
    `include_background` the original's rule: top-k over all K + 1, and background, when
    among them, becomes the last class with the background probability (index 0 - 1 = -1
    picks the last name of action_name.txt, test.py:210-241).
    """
    probs = action_probs.float().reshape(-1)
    k = probs.shape[0] - 1
    if include_background:
        scores, idx = torch.sort(probs, descending=True, stable=True)
        labels = idx[:top_k] - 1
        labels[labels < 0] = k - 1
        return labels, scores[:top_k]
    scores, idx = torch.sort(probs[1:], descending=True, stable=True)
    return idx[:top_k], scores[:top_k]


def score_video_labels(class_scores: Tensor, top_k: int = 2) -> tuple[Tensor, Tensor]:
    """Top-k of a video's class scores `[K]` -> (labels `[k]`, scores `[k]`)."""
    scores, idx = torch.sort(class_scores.float().reshape(-1), descending=True, stable=True)
    return idx[:top_k], scores[:top_k]


def gt_video_labels(label: int) -> tuple[Tensor, Tensor]:
    """The ground-truth video label with score 1 (the oracle "gt" mode)."""
    return torch.tensor([int(label)], dtype=torch.long), torch.ones(1)


def fuse_labels(proposals: Detections, labels: Tensor, scores: Tensor) -> Detections:
    """Each proposal times each video label: `M` proposals and `k` labels -> `M * k`
    detections, proposal by proposal (proposal i, label j at row i * k + j), score
    proposal score x label score."""
    device = proposals.scores.device
    labels = labels.to(device=device, dtype=torch.long).reshape(-1)
    scores = scores.to(device=device, dtype=proposals.scores.dtype).reshape(-1)
    k = labels.shape[0]
    if scores.shape[0] != k:
        raise ValueError(f"fuse_labels: {k} labels but {scores.shape[0]} scores")
    return Detections(
        segments=proposals.segments.repeat_interleave(k, dim=0),
        scores=(proposals.scores[:, None] * scores[None, :]).reshape(-1),
        labels=labels.repeat(len(proposals)),
    )


@dataclass
class VideoClassifier:
    """Per-video class scores from a classifier file, in the config's class order.

    `scores[video_id]` is `[K]`; `source` the file. Look-ups accept the video id with or
    without the ActivityNet ``v_`` prefix.
    """

    source: str
    scores: dict[str, Tensor] = field(default_factory=dict)

    def __call__(self, video_id: str) -> Tensor:
        for key in (video_id, video_id[2:] if video_id.startswith("v_") else f"v_{video_id}"):
            if key in self.scores:
                return self.scores[key]
        raise ClassifierError(f"{self.source}: no scores for video {video_id!r}; the classifier "
                              "file must cover every test video")


def load_video_classifier(path: str | Path, class_names: Sequence[str]) -> VideoClassifier:
    """Read ``{"results": {video: [scores]}, "class": [names]}`` and reorder each video's
    scores to `class_names` (matched by name; the file's other classes are ignored).
    Raises `ClassifierError` for a malformed file or a class of ours it does not have."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClassifierError(f"{p}: cannot read the classifier file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) \
            or not isinstance(data.get("class"), list):
        raise ClassifierError(f"{p}: not a video classifier file; expected "
                              '{"results": {video: [scores]}, "class": [names]}')
    names = [str(n) for n in data["class"]]
    where = {n: i for i, n in enumerate(names)}
    missing = [n for n in class_names if n not in where]
    if missing:
        raise ClassifierError(f"{p}: {len(missing)} of the config's classes are not in its "
                              f"\"class\" list: {name_list(missing, 5)}")
    order = torch.tensor([where[n] for n in class_names], dtype=torch.long)
    out = VideoClassifier(str(p))
    for video, values in data["results"].items():
        if not isinstance(values, list) or len(values) != len(names):
            raise ClassifierError(f"{p}: video {video!r} has {len(values) if isinstance(values, list) else 'no'} "
                                  f"scores; expected a list of {len(names)} (one per class)")
        out.scores[str(video)] = torch.tensor(values, dtype=torch.float32)[order]
    return out


def fuse_video(proposals: Detections, classifier: Literal["builtin", "gt"] | VideoClassifier, *,
               action_probs: Tensor | None = None, video_id: str | None = None,
               gt_label: int | None = None, top_k: int = 2,
               include_background: bool = False) -> Detections:
    """Label one video's proposals with the chosen classifier: "builtin" needs
    `action_probs [K + 1]` (`AFSD.action_probs`), "gt" the video's `gt_label`, a
    `VideoClassifier` the `video_id`."""
    if isinstance(classifier, VideoClassifier):
        if video_id is None:
            raise ValueError("fuse_video: a classifier file needs the video_id")
        labels, scores = score_video_labels(classifier(video_id), top_k)
    elif classifier == "builtin":
        if action_probs is None:
            raise ValueError("fuse_video: classifier 'builtin' needs action_probs")
        labels, scores = builtin_video_labels(action_probs, top_k, include_background)
    elif classifier == "gt":
        if gt_label is None:
            raise ValueError("fuse_video: classifier 'gt' needs the video's gt_label")
        labels, scores = gt_video_labels(gt_label)
    else:
        raise ValueError(f"fuse_video: unknown classifier {classifier!r}; use builtin, gt or a file")
    return fuse_labels(proposals, labels, scores)


def label_proposals(proposals: Detections, fps: float, duration: float | None,
                    classifier: Literal["builtin", "gt"] | VideoClassifier, *,
                    action_probs: Tensor | None = None, video_id: str | None = None,
                    gt_label: int | None = None, top_k: int = 2,
                    include_background: bool = False) -> Detections:
    """Proposals in video frames -> labelled detections in seconds, best first.

    Seconds = frames / `fps`, clipped to [0, `duration`] (None: not clipped), empty segments
    dropped (original: AFSD/anet_video_cls/test.py:197-209); then every proposal times the
    video labels of `classifier` (`fuse_video`), sorted by descending score (ties keep
    proposal order)."""
    if fps <= 0:
        raise ValueError(f"label_proposals: fps must be > 0, got {fps}")
    segs = proposals.segments / fps
    if duration is not None:
        segs = segs.clamp(min=0.0, max=float(duration))
    keep = segs[:, 1] > segs[:, 0]
    seconds = Detections(segs[keep], proposals.scores[keep], proposals.labels[keep])
    fused = fuse_video(seconds, classifier, action_probs=action_probs, video_id=video_id,
                       gt_label=gt_label, top_k=top_k, include_background=include_background)
    order = torch.sort(fused.scores, descending=True, stable=True).indices
    return Detections(fused.segments[order], fused.scores[order], fused.labels[order])
