"""What the heads return: the anchor head's raw outputs (`HeadOutputs`) and the detections of
every family (`Detections`), with `float_list` for their per-window lengths and offsets.

Head outputs, one tuple for all levels::

    cls[l]: [B, A * K, T_l]   channel a * K + c   (anchor a, class c)
    reg[l]: [B, A * 2, T_l]   channel a * 2 + {0: d_centre, 1: d_log_width}

(original: vedatad/models/heads/anchor_head.py:21-87, the channel layout of RetinaHead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

__all__ = ["Detections", "HeadOutputs", "float_list"]

HeadOutputs = tuple[list[Tensor], list[Tensor]]  # (cls per level, reg per level)


@dataclass
class Detections:
    """Detections of one window or one video.

    segments `[M, 2]` (frames, or seconds after a family's merge, e.g.
    `tallformer.models.postprocess.merge_video_detections`),
    scores `[M]`, labels `[M]` int64 class indices (into the config's class list).
    """

    segments: Tensor
    scores: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def float_list(values: Sequence[int] | Sequence[float] | Tensor) -> list[float]:
    """Per-window numbers (lengths, offsets) given as a sequence or a tensor, as floats."""
    return [float(x) for x in (values.tolist() if isinstance(values, Tensor) else values)]
