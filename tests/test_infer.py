"""Inference: all windows of a video merged into its detections in seconds (original:
vedatad/engines/infer_engine.py:76-117; weighted NMS vedatad/misc/segment/segment.py:268-359)."""

from __future__ import annotations

import pytest
import torch

from tallformer.engine.infer import merge_video_detections
from tallformer.models import Detections


def _windows() -> list[Detections]:
    return [
        Detections(torch.tensor([[30.0, 60.0], [300.0, 330.0]]), torch.tensor([0.9, 0.3]),
                   torch.tensor([1, 0])),
        Detections(torch.tensor([[33.0, 63.0], [30.0, 60.0]]), torch.tensor([0.6, 0.8]),
                   torch.tensor([1, 2])),
    ]


def test_merge_video_detections_nmw_seconds_and_cap() -> None:
    windows = _windows()
    out = merge_video_detections(windows, fps=15.0, method="nmw", iou_threshold=0.5)
    # class 1: [30, 60] (0.9) and [33, 63] (0.6, IoU 27/33) merge: weights 0.9*1, 0.6*27/33
    w0, w1 = 0.9, 0.6 * 27 / 33
    merged = (w0 * torch.tensor([30.0, 60.0]) + w1 * torch.tensor([33.0, 63.0])) / (w0 + w1)
    assert out.labels.tolist() == [1, 2, 0]
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.3])
    torch.testing.assert_close(out.segments[0], merged / 15.0)
    torch.testing.assert_close(out.segments[1:], torch.tensor([[2.0, 4.0], [20.0, 22.0]]))
    assert len(merge_video_detections(windows, 15.0, max_per_video=2)) == 2
    assert len(merge_video_detections([], 15.0)) == 0


def test_merge_hard_nms_keeps_boundaries_and_rejects_bad_fps() -> None:
    out = merge_video_detections(_windows(), fps=30.0, method="hard", iou_threshold=0.5)
    # hard NMS drops [33, 63] (IoU 27/33 > 0.5 with the better [30, 60]) without merging
    assert out.labels.tolist() == [1, 2, 0]
    torch.testing.assert_close(out.segments, torch.tensor([[1.0, 2.0], [1.0, 2.0], [10.0, 11.0]]))
    with pytest.raises(ValueError, match="fps must be > 0"):
        merge_video_detections(_windows(), fps=0.0)
