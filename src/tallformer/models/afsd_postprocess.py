"""ActivityNet (AFSD) inference: decode the refined proposals of a clip, score them, soft-NMS
them class-agnostically and clip them to the video (original: AFSD/anet_video_cls/test.py:143-209).

Per clip of T frames (the whole video, zero-padded to T = 768):

1. distances refined: d' = d + (d_l + d_r) / 2 * prop_loc per side; segment
   [T x - d'_l, T x + d'_r] clamped to [0, T];
2. score = ((softmax(conf)_1 + softmax(prop_conf)_1) / 2) * sigmoid(center); keep
   score > `score_thr` (1e-9);
3. NMS (`test.nms_method`, paper: Gaussian soft-NMS, sigma 0.85, scores below `score_thr`
   dropped, at most `max_num` = 5000 kept) with `tallformer.ops.segments.nms`, or the
   original's loop (`soft_nms_drop_last`, which never keeps the last open candidate);
4. clipped to [0, length] (the video's frames), empty segments dropped, shifted by the
   clip's offset.

Labels are all 0 (one proposal class); `tallformer.models.afsd_fusion` labels them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tallformer.config import ConfigError
from tallformer.models.afsd_outputs import AfsdOutputs
from tallformer.models.outputs import Detections, float_list
from tallformer.ops.segments import NmsMethod, nms

if TYPE_CHECKING:
    from tallformer.config import Config

__all__ = ["AfsdPostProcess", "decode_proposals", "soft_nms_drop_last"]


def decode_proposals(out: AfsdOutputs, b: int, num_frames: int) -> tuple[Tensor, Tensor]:
    """Refined segments `[P, 2]` (clip frames, clamped to [0, T]) and foreground scores `[P]`
    of clip `b` (original: AFSD/anet_video_cls/test.py:143-183)."""
    loc = out.loc[b].float()
    prop_loc = out.prop_loc[b].float()
    conf = torch.softmax(out.conf[b].float(), dim=-1)[:, 1]
    prop_conf = torch.softmax(out.prop_conf[b].float(), dim=-1)[:, 1]
    center = torch.sigmoid(out.center[b].float()).reshape(-1)
    width = loc[:, :1] + loc[:, 1:]
    loc = 0.5 * width * prop_loc + loc
    x = out.priors[:, 0].float() * num_frames
    segments = torch.stack([x - loc[:, 0], x + loc[:, 1]], dim=1).clamp(min=0, max=num_frames)
    return segments, (conf + prop_conf) / 2.0 * center


def soft_nms_drop_last(segments: Tensor, scores: Tensor, sigma: float = 0.85, top_k: int = 5000,
                       score_threshold: float = 1e-9) -> tuple[Tensor, Tensor]:
    """The original's Gaussian soft-NMS loop, kept for `model.afsd.soft_nms_drop_last`
    (original: AFSD/common/segment_utils.py:128-157).

    Open: every segment with score >= threshold. While more than one is open and fewer than
    `top_k` are kept: keep the best open one, multiply every other open score by
    exp(-IoU^2 / sigma) with IoU = overlap / (max(len_kept, 1e-5) + len_j - overlap), close
    those below the threshold. The last open candidate is never kept (a single candidate
    gives nothing). Returns (segments `[K, 2]`, decayed scores `[K]`) in input order.
    """
    start, end = segments[:, 0].clone(), segments[:, 1].clone()
    score = scores.clone()
    done = torch.zeros_like(score, dtype=torch.bool)
    open_ = score >= score_threshold
    while int(open_.sum()) > 1 and int(done.sum()) < top_k:
        idx = int(torch.nonzero(open_).flatten()[score[open_].argmax()])
        open_[idx] = False
        done[idx] = True
        s, e = start[open_], end[open_]
        inter = torch.clamp(e.clamp(max=end[idx]) - s.clamp(min=start[idx]), min=0)
        width = torch.clamp(end[idx] - start[idx], min=1e-5)
        iou = inter / (width + (e - s) - inter)
        score[open_] *= torch.exp(-iou ** 2 / sigma)
        open_[score < score_threshold] = False
    return torch.stack([start[done], end[done]], dim=1), score[done]


@dataclass
class AfsdPostProcess:
    """Class-agnostic proposals per clip (see the module docstring); from `test.*` and
    `model.afsd.soft_nms_drop_last`."""

    num_frames: int = 768
    score_thr: float = 1e-9
    method: NmsMethod = "soft_gaussian"
    iou_threshold: float = 0.5
    sigma: float = 0.85
    max_num: int = 5000
    drop_last: bool = False

    @classmethod
    def from_config(cls, cfg: Config) -> AfsdPostProcess:
        t = cfg.test
        drop_last = cfg.model.afsd.soft_nms_drop_last
        if drop_last and t.nms_method != "soft_gaussian":
            raise ConfigError(f"model.afsd.soft_nms_drop_last is the original's Gaussian soft-NMS; "
                              f"it needs test.nms_method=soft_gaussian, not {t.nms_method}")
        return cls(cfg.data.num_frames, t.score_thr, t.nms_method, t.nms_iou, t.nms_sigma,
                   t.max_per_video, drop_last)

    @torch.no_grad()
    def __call__(self, out: AfsdOutputs, lengths: Sequence[int] | Tensor,
                 offsets: Sequence[int] | Tensor | None = None) -> list[Detections]:
        """Args:
            out: the outputs of B clips.
            lengths: B real clip lengths (the videos' frames, <= T).
            offsets: B clip starts (video frames; 0 for whole videos).
        Returns:
            B `Detections` (video frames, scores, labels 0).
        """
        b = out.loc.shape[0]
        lens = float_list(lengths)
        offs = [0.0] * b if offsets is None else float_list(offsets)
        if len(lens) != b or len(offs) != b:
            raise ValueError(f"predict: {b} clips but {len(lens)} lengths, {len(offs)} offsets")
        results = []
        for i in range(b):
            segments, scores = decode_proposals(out, i, self.num_frames)
            keep = scores > self.score_thr
            segments, scores = segments[keep], scores[keep]
            if self.drop_last:
                device = segments.device
                segments, scores = soft_nms_drop_last(segments.cpu(), scores.cpu(), self.sigma,
                                                      self.max_num, self.score_thr)
                segments, scores = segments.to(device), scores.to(device)
            else:
                labels = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
                segments, scores, _ = nms(segments, scores, labels, self.method, self.iou_threshold,
                                          sigma=self.sigma, min_score=self.score_thr,
                                          max_num=self.max_num)
            segments = segments.clamp(min=0, max=lens[i])
            valid = segments[:, 1] > segments[:, 0]
            segments, scores = segments[valid] + offs[i], scores[valid]
            results.append(Detections(segments, scores,
                                      torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)))
        return results
