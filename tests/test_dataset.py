"""Training and test datasets on tiny real mp4 files (PyAV), and their collate functions."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import tallformer.data.dataset as D
from tallformer.config import DataConfig
from tallformer.data.annotations import (
    AnnotationSet,
    Instance,
    VideoAnnotation,
    subset_frames,
    video_fps,
)
from tallformer.data.sampler import VideoExclusiveSampler
from tallformer.data.video import VideoError, open_source
from tallformer.data.windows import crop_segments, sample_train_window
from tallformer.errors import TallformerError
from tallformer.ops.seeding import sample_generators

FPS = 15
CHUNK = 16
LENGTHS = {"vid_a": 150, "vid_b": 40, "vid_c": 100}  # vid_b is shorter than the 64-frame window
CLASSES = ["Jump", "Run"]


def _cfg(**kw) -> DataConfig:
    base = dict(fps=float(FPS), frame_size=[64, 64], crop_size=56, num_frames=64,
                train_start_stride=2, test_overlap=0.25)
    base.update(kw)
    return DataConfig(**base)


def _annotations() -> AnnotationSet:
    videos = {
        "vid_a": VideoAnnotation(
            "vid_a", "validation", 10.0,
            [Instance((1.0, 3.0), "Jump"), Instance((4.0, 9.0), "Run"), Instance((0.5, 9.5), "Run"),
             Instance((2.0, 2.5), "Swim")],  # not in CLASSES: ignored
            ambiguous=[(6.0, 7.0)],
        ),
        "vid_b": VideoAnnotation("vid_b", "validation", 40 / FPS, [Instance((0.5, 2.0), "Jump")]),
        "vid_c": VideoAnnotation("vid_c", "validation", 100 / FPS, [Instance((2.0, 6.0), "Run")]),
        "vid_t": VideoAnnotation("vid_t", "test", 100 / FPS, []),
    }
    return AnnotationSet(videos=videos, classes=["Jump", "Run", "Swim"], source="memory.json")


@pytest.fixture(scope="module")
def videos_dir(tmp_path_factory) -> Path:
    from helpers import write_video

    folder = tmp_path_factory.mktemp("videos")
    for vid, n in LENGTHS.items():
        write_video(folder / f"{vid}.mp4", n, fps=FPS, size=(64, 64), gop=16)
    write_video(folder / "vid_t.mp4", 100, fps=FPS, size=(64, 64), gop=16)
    return folder


def _train(videos_dir: Path, **kw) -> D.TrainDataset:
    cfg = kw.pop("cfg", _cfg())
    with pytest.warns(UserWarning, match="labels outside the class list"):
        return D.TrainDataset(_annotations(), videos_dir, cfg, CLASSES, chunk_size=CHUNK, **kw)


class _RecordingSources:
    """Wraps the real `open_source`: records every `read` range and the sources opened."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, int, int]] = []
        self.sources: list = []

    def open(self, path, fps, size):
        source = open_source(path, fps, size)
        self.sources.append(source)
        real_read = source.read

        def read(start: int, stop: int) -> np.ndarray:
            self.reads.append((Path(path).stem, start, stop))
            return real_read(start, stop)

        source.read = read
        return source


# ------------------------------------------------------------------------ training


def test_train_sample_shapes_and_padding(videos_dir):
    ds = _train(videos_dir)
    assert len(ds) == 3
    assert ds.num_chunks == 4
    for index, vid in enumerate(["vid_a", "vid_b", "vid_c"]):
        s = ds[index]
        n = LENGTHS[vid]
        assert s["video_id"] == vid
        assert s["video_frames"] == n
        assert s["fps"] == FPS
        assert s["chunks"].shape == (4, 3, CHUNK, 56, 56)
        assert s["chunks"].dtype == torch.float32
        assert s["keep"].tolist() == [0, 1, 2, 3]
        assert s["keep"].dtype == torch.int64
        assert s["cached"].shape == (0, 0, CHUNK // 2)
        assert s["num_frames"] == min(64, n)
        assert s["offset"] % 2 == 0
        assert 0 <= s["offset"] <= n - s["num_frames"]
        g = s["segments"]
        assert g.dtype == torch.float32
        assert g.ndim == 2
        assert g.shape[1] == 2
        assert s["labels"].dtype == torch.int64
        assert s["labels"].shape == (g.shape[0],)
        assert s["ignore"].dtype == torch.float32
        assert s["ignore"].shape[1] == 2
        assert torch.all(g >= 0)
        assert torch.all(g <= s["num_frames"])
    short = ds[1]  # 40 frames: chunk 2 holds frames 32..39 then padding, chunk 3 is padding
    assert short["offset"] == 0
    assert torch.all(short["chunks"][2][:, 8:] == 0)
    assert torch.any(short["chunks"][2][:, :8] != 0)
    assert torch.all(short["chunks"][3] == 0)
    assert torch.all(short["chunks"][:2].abs().sum(dim=(0, 1, 3, 4)) > 0)  # no empty real frame


def test_train_segments_follow_the_window(videos_dir):
    ds = _train(videos_dir)
    for epoch in range(3):
        ds.set_epoch(epoch)
        s = ds[0]
        video = np.array([[1.0, 3.0], [4.0, 9.0], [0.5, 9.5]]) * FPS  # seconds -> frames
        labels = np.array([0, 1, 1])
        exp, exp_labels, _ = crop_segments(video, labels, s["offset"], s["num_frames"], 0.75)
        np.testing.assert_allclose(s["segments"].numpy(), exp, atol=1e-4)
        assert s["labels"].tolist() == exp_labels.tolist()
        exp_ign, _, _ = crop_segments(np.array([[90.0, 105.0]]), None, s["offset"], 64, 0.75)
        np.testing.assert_allclose(s["ignore"].numpy(), exp_ign, atol=1e-4)


def test_ignore_regions_are_clipped_to_the_video_like_instances(videos_dir):
    # Training clips every segment to the video and drops the empty ones (original:
    # vedatad/datasets/thumos14.py:72-76); ignore regions follow the same keep rule as
    # instances (original: vedatad/datasets/pipelines/transforms.py:418-429).
    # vid_b has 40 frames: the window is [0, 40); [30, 60] lies 10/30 inside unclipped
    # (dropped), but clipped to the video it is [30, 40], wholly inside (kept).
    ann = _annotations()
    ann.videos["vid_b"].annotations.append(Instance((2.0, 4.0), "Run"))
    ann.videos["vid_b"].ambiguous = [(2.0, 4.0), (3.0, 4.0)]
    with pytest.warns(UserWarning, match="labels outside the class list"):
        ds = D.TrainDataset(ann, videos_dir, _cfg(), CLASSES, chunk_size=CHUNK)
    s = ds[1]
    assert s["video_id"] == "vid_b"
    assert (s["offset"], s["num_frames"]) == (0, 40)
    np.testing.assert_allclose(s["segments"].numpy(), [[7.5, 30.0], [30.0, 40.0]], atol=1e-4)
    np.testing.assert_allclose(s["ignore"].numpy(), [[30.0, 40.0]], atol=1e-4)


def test_train_is_deterministic_per_seed_rank_epoch_index(videos_dir):
    a, b = _train(videos_dir, seed=5), _train(videos_dir, seed=5)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in (2, 0):  # a different call order gives the same samples
            sa, sb = a[i], b[i]
            assert sa["offset"] == sb["offset"]
            torch.testing.assert_close(sa["chunks"], sb["chunks"], rtol=0, atol=0)
            torch.testing.assert_close(sa["segments"], sb["segments"], rtol=0, atol=0)

    a.set_epoch(0)
    base = a[0]
    epoch1 = _train(videos_dir, seed=5)
    epoch1.set_epoch(1)
    for ds in (_train(videos_dir, seed=5, rank=1), _train(videos_dir, seed=6), epoch1):
        other = ds[0]
        assert other["offset"] != base["offset"] or not torch.equal(other["chunks"], base["chunks"])


def test_chunk_selector_decodes_only_kept_chunks(videos_dir, monkeypatch):
    rec = _RecordingSources()
    monkeypatch.setattr(D, "open_source", rec.open)
    calls = []

    def selector(seed, rank, epoch, index, num_chunks):
        calls.append((seed, rank, epoch, index, num_chunks))
        return [0, 2, 3]

    ds = _train(videos_dir, chunk_selector=selector, seed=3, rank=2)
    ds.set_epoch(4)
    s = ds[0]
    assert calls == [(3, 2, 4, 0, 4)]
    off = s["offset"]
    # one read per contiguous run of kept chunks: [0] and [2, 3]; chunk 1 is never decoded
    assert rec.reads == [("vid_a", off, off + 16), ("vid_a", off + 32, off + 64)]
    assert s["chunks"].shape == (3, 3, CHUNK, 56, 56)
    assert s["keep"].tolist() == [0, 2, 3]
    # the source decoded far fewer frames than the whole video (keyframe every 16 frames)
    assert rec.sources[0].decoded_frames <= 48 + 2 * 16 < LENGTHS["vid_a"]
    # the kept chunks are exactly those of a full decode with the same seeds (same window,
    # same augmentation parameters for every chunk)
    full = _train(videos_dir, seed=3, rank=2)
    full.set_epoch(4)
    ref = full[0]
    assert ref["offset"] == off
    torch.testing.assert_close(s["chunks"], ref["chunks"][[0, 2, 3]], rtol=0, atol=0)


def test_chunk_past_the_video_end_is_not_decoded(videos_dir, monkeypatch):
    rec = _RecordingSources()
    monkeypatch.setattr(D, "open_source", rec.open)
    ds = _train(videos_dir, chunk_selector=lambda *a: [1, 3])
    s = ds[1]  # vid_b, 40 frames: chunk 3 (frames 48..63) lies past the end
    assert rec.reads == [("vid_b", 16, 32)]
    assert torch.all(s["chunks"][1] == 0)
    assert torch.any(s["chunks"][0] != 0)


def test_bad_chunk_selector_is_reported(videos_dir):
    ds = _train(videos_dir, chunk_selector=lambda *a: [2, 1])
    with pytest.raises(D.DatasetError, match="sorted, distinct chunk ids"):
        ds[0]


def test_feature_reader_gives_the_dropped_chunks_rows(videos_dir):
    c = 6
    banks = {vid: np.random.default_rng(i).standard_normal((n // 2, c)).astype(np.float32)
             for i, (vid, n) in enumerate(LENGTHS.items())}
    seen = []

    def reader(video_id, row_start, chunk_ids, rows_per_chunk):
        seen.append((video_id, row_start, list(chunk_ids), rows_per_chunk))
        bank = banks[video_id]
        out = np.zeros((len(chunk_ids), c, rows_per_chunk), np.float32)
        for i, chunk in enumerate(chunk_ids):
            rows = bank[row_start + chunk * rows_per_chunk:][:rows_per_chunk]
            out[i, :, : len(rows)] = rows.T
        return out

    ds = _train(videos_dir, chunk_selector=lambda *a: [1], feature_reader=reader)
    s = ds[2]
    off = s["offset"]
    assert seen == [("vid_c", off // 2, [0, 2, 3], 8)]
    assert s["cached"].shape == (3, c, 8)
    assert s["cached"].dtype == torch.float32
    torch.testing.assert_close(s["cached"][1], torch.from_numpy(banks["vid_c"][off // 2 + 16:][:8].T))

    bad = _train(videos_dir, chunk_selector=lambda *a: [1], feature_reader=lambda *a: np.zeros((2, 3)))
    with pytest.raises(D.DatasetError, match=r"expected \[3, C, 8\]"):
        bad[0]


def test_odd_start_stride_with_a_bank_is_warned(videos_dir):
    # bank row = offset // 2 is exact only for even starts (original:
    # vedatad/engines/train_engine.py:90 takes tshift // 2 for any start)
    def reader(video_id, row_start, chunk_ids, rows_per_chunk):
        return np.zeros((len(chunk_ids), 2, rows_per_chunk), np.float32)

    with pytest.warns(UserWarning, match="one frame off"), pytest.warns(UserWarning, match="labels"):
        D.TrainDataset(_annotations(), videos_dir, _cfg(train_start_stride=3), CLASSES,
                       chunk_size=CHUNK, feature_reader=reader)
    with warnings.catch_warnings(record=True) as record:  # even stride, or no bank: silent
        warnings.simplefilter("always")
        _train(videos_dir, feature_reader=reader)
        _train(videos_dir, cfg=_cfg(train_start_stride=1))
    assert not any("one frame off" in str(w.message) for w in record)


def test_collate_train_shapes(videos_dir):
    c = 5

    def reader(video_id, row_start, chunk_ids, rows_per_chunk):
        return np.ones((len(chunk_ids), c, rows_per_chunk), np.float32)

    ds = _train(videos_dir, chunk_selector=lambda seed, rank, epoch, index, n: [index % n, 3],
                feature_reader=reader)
    batch = D.collate_train([ds[0], ds[1], ds[2]])
    assert batch["chunks"].shape == (6, 3, CHUNK, 56, 56)
    assert batch["keep_mask"].dtype == torch.bool
    assert batch["keep_mask"].tolist() == [[True, False, False, True], [False, True, False, True],
                                           [False, False, True, True]]
    assert batch["cached"].shape == (3, 2, c, 8)
    for key in ("segments", "labels", "ignore", "video_id", "offset", "fps", "num_frames", "video_frames"):
        assert len(batch[key]) == 3
    assert batch["video_id"] == ["vid_a", "vid_b", "vid_c"]
    # sample-major chunk order
    torch.testing.assert_close(batch["chunks"][2:4], ds[1]["chunks"], rtol=0, atol=0)

    uneven = _train(videos_dir, chunk_selector=lambda seed, rank, epoch, index, n: list(range(index + 1)))
    with pytest.raises(ValueError, match="keep different numbers of chunks"):
        D.collate_train([uneven[0], uneven[1]])


def test_dataloader_workers_match_the_main_process(videos_dir):
    ds = _train(videos_dir, chunk_selector=lambda *a: [0, 3], seed=1)
    ds[0]  # opens a source in the parent: the worker must open its own
    loader = DataLoader(ds, batch_size=3, num_workers=1, collate_fn=D.collate_train)
    (batch,) = list(loader)
    ref = D.collate_train([ds[i] for i in range(3)])
    assert batch["offset"] == ref["offset"]
    torch.testing.assert_close(batch["chunks"], ref["chunks"], rtol=0, atol=0)


def test_missing_and_broken_videos_are_named(videos_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for vid in ("vid_a", "vid_b"):
        (partial / f"{vid}.mp4").write_bytes((videos_dir / f"{vid}.mp4").read_bytes())
    with pytest.raises(D.DatasetError, match=r"1 of 3 videos not found(.|\n)*vid_c"):
        _train(partial)
    broken = tmp_path / "broken"
    broken.mkdir()
    for vid in ("vid_a", "vid_c"):
        (broken / f"{vid}.mp4").write_bytes((videos_dir / f"{vid}.mp4").read_bytes())
    (broken / "vid_b.mp4").write_bytes(b"this is not a video")
    ds = _train(broken)
    with pytest.raises(D.DatasetError, match=r"video 'vid_b': cannot open .*vid_b\.mp4"):
        ds[1]


def test_config_mismatches_are_errors(videos_dir):
    with pytest.raises(D.DatasetError, match="multiple of the chunk size"):
        D.TrainDataset(_annotations(), videos_dir, _cfg(num_frames=60), CLASSES, chunk_size=CHUNK)
    with pytest.raises(D.DatasetError, match="no video with an instance"), \
            pytest.warns(UserWarning, match="no instance of a known class"), \
            pytest.warns(UserWarning, match="labels outside the class list"):
        D.TrainDataset(_annotations(), videos_dir, _cfg(), ["Dance"], chunk_size=CHUNK)


# ------------------------------------------------------------------------ padded repeats


def test_samples_are_drawn_with_the_shared_seeding(videos_dir):
    ds = _train(videos_dir, seed=4, rank=1)
    ds.set_epoch(2)
    for index, vid in enumerate(["vid_a", "vid_b", "vid_c"]):
        np_rng, _ = sample_generators(4, 1, 2, index)
        start = sample_train_window(LENGTHS[vid], 64, 2, np_rng)
        assert ds[index]["offset"] == start


def test_a_padded_repeat_draws_its_own_window_chunks_and_augmentation(videos_dir):
    calls = []

    def selector(seed, rank, epoch, index, num_chunks):
        calls.append(index)
        return [index % num_chunks]

    ds = _train(videos_dir, chunk_selector=selector, seed=2)
    first, repeat = ds[0], ds[0 + len(ds)]  # item 0 and its first padded repeat
    assert calls == [0, 3]
    assert repeat["video_id"] == first["video_id"] == "vid_a"
    assert repeat["keep"].tolist() == [3]
    assert first["keep"].tolist() == [0]
    offsets = {ds[k * len(ds)]["offset"] for k in range(6)}
    assert len(offsets) > 1  # other windows
    again = ds[0 + len(ds)]
    assert again["offset"] == repeat["offset"]  # still a pure function of the index
    torch.testing.assert_close(again["chunks"], repeat["chunks"], rtol=0, atol=0)
    full = _train(videos_dir, seed=2)
    a, b = full[0], full[3]
    assert a["offset"] != b["offset"] or not torch.equal(a["chunks"], b["chunks"])
    with pytest.raises(IndexError):
        ds[-1]


def test_the_sampler_s_padding_is_drawn_anew_through_the_loader(videos_dir):
    # 3 videos, batches of 2: step 2 holds vid at index 2 and a padded repeat of a step-1 item
    ds = _train(videos_dir, seed=1)
    sampler = VideoExclusiveSampler([v.video_id for v in ds.videos], 2, seed=0, shuffle=False)
    assert list(sampler) == [[0, 1], [2, 3]]  # 3 = item 0 again, as its first repeat
    batches = list(DataLoader(ds, batch_sampler=sampler, collate_fn=D.collate_train))
    assert batches[1]["video_id"] == ["vid_c", "vid_a"]
    assert batches[0]["video_id"][0] == "vid_a"
    first, repeat = batches[0], batches[1]
    assert (first["offset"][0], repeat["offset"][1]) == (ds[0]["offset"], ds[3]["offset"])
    assert first["offset"][0] != repeat["offset"][1] or not torch.equal(
        first["chunks"][:4], repeat["chunks"][4:])


# ------------------------------------------------------------------------ frames and errors


def test_subset_frames_and_video_fps(videos_dir):
    ann = _annotations()
    assert subset_frames(ann, "validation", videos_dir, 15.0) == LENGTHS
    cfg = _cfg()
    assert video_fps(ann.videos["vid_a"], cfg) == 15.0
    ann.videos["vid_a"].fps = 7.5  # a preparation step's own rate wins over data.fps
    assert video_fps(ann.videos["vid_a"], cfg) == 7.5
    assert video_fps(ann.videos["vid_b"], 10) == 10.0
    counts = subset_frames(ann, "validation", videos_dir, cfg)
    assert counts == {"vid_a": 75, "vid_b": 40, "vid_c": 100}
    assert counts["vid_a"] == len(open_source(videos_dir / "vid_a.mp4", 7.5, (64, 64)))
    with pytest.raises(VideoError, match="Check --videos"):
        subset_frames(ann, "test", videos_dir.parent, 15.0, setting="--videos")


def test_dataset_errors_are_tallformer_errors(videos_dir, tmp_path):
    assert issubclass(D.DatasetError, TallformerError)
    with pytest.raises(D.DatasetError, match=r"videos folder .*nowhere does not exist; check data\.videos"):
        _train(tmp_path / "nowhere")
