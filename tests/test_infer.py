"""Inference: all windows of a video merged into its detections in seconds (original:
vedatad/engines/infer_engine.py:76-117; weighted NMS vedatad/misc/segment/segment.py:268-359),
the two window protocols, chunk reuse, streaming decode."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from tallformer.config import Config, load_config
from tallformer.data.video import VideoError
from tallformer.data.windows import test_windows
from tallformer.engine.families.anchor import plan_windows, window_stride
from tallformer.engine.family import InferenceStats
from tallformer.engine.infer import infer_video
from tallformer.models import Detections
from tallformer.models.postprocess import merge_video_detections


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

# --------------------------------------------------------------------------- the test path



class _FakeSource:
    """A FrameSource whose frame i is noise seeded by i (the same pixels however it is read)."""

    def __init__(self, n: int, fps: float = 15.0, size: tuple[int, int] = (64, 64),
                 fail_at: int | None = None) -> None:
        self.n, self.fps, self.size, self.path = n, fps, size, Path("fake.mp4")
        self.fail_at = fail_at
        self.reads: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return self.n

    def read(self, start: int, stop: int) -> np.ndarray:
        self.reads.append((start, stop))
        if self.fail_at is not None and stop > self.fail_at:
            raise VideoError(self.path, "decoding failed (test); is it corrupt?")
        return np.stack([np.random.default_rng(i).integers(0, 256, (*self.size, 3), dtype=np.uint8)
                         for i in range(start, stop)])

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def demo_model():
    from tallformer.engine.factory import build_detector

    torch.manual_seed(0)
    return build_detector(load_config("demo")).eval()


def _cfg(*overrides: str) -> Config:
    return load_config("demo", list(overrides))


def test_window_protocols_paper_geometry() -> None:
    grid, original = load_config(None), load_config(None, ["test.protocol=original"])
    assert window_stride(grid) == 352
    assert window_stride(original) == 360
    for n in (1, 100, 480, 481, 840, 841, 25_100):
        assert plan_windows(n, original) == test_windows(n, 480, 0.25)
        windows = plan_windows(n, grid)
        assert all(start % 32 == 0 for start, _ in windows)
        assert windows[-1][0] + windows[-1][1] == n  # the last window reaches the end
        assert all(b[0] - a[0] == 352 for a, b in itertools.pairwise(windows))
    # a stride below one chunk is raised to one chunk
    assert window_stride(load_config(None, ["data.test_overlap=0.99"])) == 32


def test_a_detection_in_the_overlap_of_two_windows_comes_out_once() -> None:
    cfg = _cfg()  # 128-frame windows, stride 96: [0, 128) and [96, 224) share frames 96..127
    action = (100.0, 124.0)
    windows = plan_windows(224, cfg)
    assert windows == [(0, 128), (96, 128)]
    per_window = []
    for k, (start, length) in enumerate(windows):
        # each window finds the action (clamped to the window, in video frames), a little off
        seg = torch.tensor([[max(action[0], start) + k, min(action[1], start + length) - k]])
        per_window.append(Detections(seg, torch.tensor([0.8 - 0.1 * k]), torch.tensor([2])))
    out = merge_video_detections(per_window, fps=15.0, method="nmw", iou_threshold=0.5)
    assert len(out) == 1
    assert out.labels.tolist() == [2]
    assert out.scores.tolist() == pytest.approx([0.8])
    assert 100 / 15 <= out.segments[0, 0].item() < out.segments[0, 1].item() <= 124 / 15


def test_chunk_reuse_gives_the_detections_of_recomputing_every_window(demo_model) -> None:
    cfg = _cfg("test.batch_size=2")
    n = 400  # windows 0, 96, 192, 288; 13 chunks, the last one partial
    reuse, recompute = InferenceStats(), InferenceStats()
    a = infer_video(demo_model, cfg, _FakeSource(n), stats=reuse)
    b = infer_video(demo_model, cfg, _FakeSource(n), stats=recompute, reuse_chunks=False)
    assert len(a) > 0
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.segments, b.segments)
    torch.testing.assert_close(a.scores, b.scores)
    assert reuse.windows == recompute.windows == 4
    assert reuse.backbone_chunks == 13  # each chunk once
    assert recompute.backbone_chunks == 4 * 4


def test_chunk_reuse_pads_past_the_end_with_one_shared_zero_chunk(demo_model) -> None:
    cfg = _cfg()
    n = 40  # one window [0, 40): chunk 0 full, chunk 1 partial, chunks 2 and 3 all padding
    stats = InferenceStats()
    a = infer_video(demo_model, cfg, _FakeSource(n), stats=stats)
    b = infer_video(demo_model, cfg, _FakeSource(n), reuse_chunks=False)
    assert stats.backbone_chunks == 3  # 2 real chunks + the zero chunk, computed once
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.segments, b.segments)
    assert float(a.segments.max()) <= n / 15 + 1e-6  # clamped to the real frames


def test_original_protocol_equals_windowing_each_window_by_hand(demo_model) -> None:
    from tallformer.data.transforms import test_transform
    from tallformer.engine.families.anchor import AnchorInference
    from tallformer.engine.family import ResultSet, VideoContext

    cfg = _cfg("test.protocol=original", "data.test_overlap=0.3")  # stride 89: off the chunk grid
    n = 300
    source = _FakeSource(n)
    windows = test_windows(n, 128, 0.3)
    assert windows == plan_windows(n, cfg)
    assert windows[1][0] == 89
    per_window = []
    with torch.no_grad():
        for start, length in windows:
            crop = cfg.data.crop_size
            x = test_transform(source.read(start, start + length), crop, cfg.data.mean, cfg.data.std)
            clip = torch.zeros(3, 128, crop, crop)
            clip[:, :length] = x
            outputs = demo_model.forward_infer(clip[None])
            per_window += demo_model.predict(outputs, [length], [start])
    merge = AnchorInference(demo_model, cfg, torch.device("cpu")).merge
    expected = merge(per_window, VideoContext("fake", 15.0, n), ResultSet())
    got = infer_video(demo_model, cfg, _FakeSource(n))
    assert torch.equal(got.segments, expected.segments)
    assert torch.equal(got.scores, expected.scores)
    assert torch.equal(got.labels, expected.labels)


@pytest.mark.parametrize("protocol", ["chunk_grid", "original"])
def test_each_frame_is_decoded_once(demo_model, tmp_path, protocol) -> None:
    from helpers import write_video
    from tallformer.data.video import open_source

    path = write_video(tmp_path / "v.mp4", 300, fps=15, size=(64, 64))
    cfg = _cfg(f"test.protocol={protocol}", "data.test_overlap=0.3")
    with open_source(path, 15.0, (64, 64)) as source:
        infer_video(demo_model, cfg, source)
        assert source.decoded_frames == source.num_source_frames == 300
        assert source.seeks <= 1


def test_memory_does_not_grow_with_the_video(demo_model) -> None:
    cfg = _cfg()
    peaks = []
    for n in (300, 1500):
        stats = InferenceStats()
        infer_video(demo_model, cfg, _FakeSource(n), stats=stats)
        peaks.append(stats.peak_frames)
    # at most the current window plus the decoder's queue (one window and two chunks)
    bound = 2 * 128 + 3 * 32
    assert max(peaks) <= bound


def test_a_decoding_error_in_the_reader_thread_reaches_the_caller(demo_model) -> None:
    import threading

    before = threading.active_count()
    with pytest.raises(VideoError, match=r"fake\.mp4: decoding failed"):
        infer_video(demo_model, _cfg(), _FakeSource(400, fail_at=200))
    assert threading.active_count() == before  # the decoder thread is gone
