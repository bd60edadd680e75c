"""What the anchor head returns: its raw outputs (`HeadOutputs`) and detections (`Detections`).

Head outputs, one tuple for all levels::

    cls[l]: [B, A * K, T_l]   channel a * K + c   (anchor a, class c)
    reg[l]: [B, A * 2, T_l]   channel a * 2 + {0: d_centre, 1: d_log_width}

(original: vedatad/models/heads/anchor_head.py:21-87, the channel layout of RetinaHead).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["Detections", "HeadOutputs"]

HeadOutputs = tuple[list[Tensor], list[Tensor]]  # (cls per level, reg per level)


@dataclass
class Detections:
    """Detections of one window or one video.

    segments `[M, 2]` (frames, or seconds after `tallformer.engine.infer.merge_video_detections`),
    scores `[M]`, labels `[M]` int64 class indices (into the config's class list).
    """

    segments: Tensor
    scores: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])
