"""Building the memory bank (`tallformer.engine.bank_build`) and `tallformer bank build|info`.

Real tiny mp4 files (PyAV), a real weights file (torch.save), the "tiny" Video Swin of
the shipped demo config (64x64 frames, 56 crop). Three training videos of 40, 71 and 64 frames
at 15 fps: 2, 3 (the last one partial, odd length) and 2 chunks of 32.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import write_video
from tallformer.cli import main
from tallformer.config import Config, load_config, shipped_config_path
from tallformer.data.transforms import test_transform
from tallformer.data.video import open_source
from tallformer.engine.bank_build import BuildError, build_bank
from tallformer.engine.device import DeviceError, resolve_device
from tallformer.errors import TallformerError, TallformerWarning
from tallformer.memory.bank import MemoryBank
from tallformer.models.backbone import VideoSwinBackbone, build_backbone_from_config
from tallformer.models.weights import load_backbone_weights

DEMO = shipped_config_path("demo")
FPS = 15
TRAIN = {"vid_a": 40, "vid_b": 71, "vid_c": 64}
CHUNKS = {v: math.ceil(n / 32) for v, n in TRAIN.items()}


def _annotations(path: Path, train: list[str], test: list[str] = ()) -> Path:
    db = {}
    for vid in train:
        db[vid] = {"subset": "training", "duration": 4.0,
                   "annotations": [{"segment": [0.5, 2.0], "label": "jump"}]}
    for vid in test:
        db[vid] = {"subset": "testing", "duration": 4.0,
                   "annotations": [{"segment": [1.0, 2.0], "label": "jump"}]}
    path.write_text(json.dumps({"database": db}))
    return path


def _config(ann: Path, videos: Path) -> Config:
    return load_config(DEMO, [f"data.annotations={ann}", f"data.videos={videos}"])


class Data:
    root: Path
    videos: Path
    ann: Path
    weights: Path
    cfg: Config
    bank_dir: Path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    d = Data()
    d.root = tmp_path_factory.mktemp("bank_build")
    d.videos = d.root / "videos"
    d.videos.mkdir()
    for vid, n in TRAIN.items():
        write_video(d.videos / f"{vid}.mp4", n, fps=FPS)
    write_video(d.videos / "vid_test.mp4", 40, fps=FPS)  # testing subset: not in the bank
    d.ann = _annotations(d.root / "ann.json", list(TRAIN), ["vid_test"])
    d.cfg = _config(d.ann, d.videos)
    torch.manual_seed(0)
    backbone = build_backbone_from_config(d.cfg.model.backbone)
    d.weights = d.root / "tiny_backbone.pth"
    torch.save(backbone.state_dict(), d.weights)
    d.bank_dir = d.root / "bank"
    report = build_bank(d.cfg, d.bank_dir, weights=d.weights, batch_chunks=4, progress=False)
    assert report.ok
    assert report.built == list(TRAIN)
    assert report.skipped == []
    assert report.chunks == sum(CHUNKS.values())
    assert report.frames == sum(TRAIN.values())
    return d


def _backbone(d: Data) -> VideoSwinBackbone:
    bb = build_backbone_from_config(d.cfg.model.backbone)
    load_backbone_weights(bb, d.weights)
    return bb.eval()


class ChunkCounter:
    """Forward hook on the backbone's patch embedding: backbone calls and chunks seen.
    With ``fail_at`` the hook raises on that call (an interrupted build)."""

    def __init__(self, backbone: VideoSwinBackbone, fail_at: int | None = None) -> None:
        self.calls = 0
        self.chunks = 0
        self.fail_at = fail_at
        self.handle = backbone.patch_embed.register_forward_pre_hook(self)

    def __call__(self, module: torch.nn.Module, inputs: tuple[torch.Tensor]) -> None:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        self.chunks += inputs[0].shape[0]


def test_rows_per_video_and_meta(data: Data) -> None:
    bank = MemoryBank.open(data.bank_dir)
    assert set(bank.videos) == set(TRAIN)  # only the training subset
    for vid, n in TRAIN.items():
        assert bank.num_frames(vid) == n
        assert bank.num_rows(vid) == math.ceil(n / 2)
        assert bank.is_complete(vid)
        assert np.load(bank.path(vid), mmap_mode="r").shape == (math.ceil(n / 2), 192)
    assert bank.dtype == "float16"
    assert bank.feature_dim == 192
    assert bank.fps == FPS
    assert bank.weights == str(data.weights)
    assert bank.backbone["arch"] == "tiny"
    assert bank.backbone["weights"] == str(data.weights)
    bank.validate(TRAIN, feature_dim=192, dtype="float16", fps=FPS)


def test_rows_equal_the_backbone_on_centre_cropped_chunks(data: Data) -> None:
    """Every row equals the backbone run on the whole video's centre-cropped, normalised
    frames (its own zero padding of the last chunk and row dropping), to fp16 precision."""
    backbone = _backbone(data)
    bank = MemoryBank.open(data.bank_dir)
    cfg = data.cfg.data
    for vid, n in TRAIN.items():
        src = open_source(data.videos / f"{vid}.mp4", FPS, tuple(cfg.frame_size))
        assert len(src) == n
        clip = test_transform(src.read(0, n), cfg.crop_size, cfg.mean, cfg.std)  # [3, n, 56, 56]
        src.close()
        with torch.inference_mode():
            ref = backbone(clip[None])[0].T.numpy()  # [ceil(n/2), C]
        rows = bank.read(vid, 0, bank.num_rows(vid), dtype="float32")
        assert ref.shape == rows.shape
        assert np.abs(ref).max() > 0.1  # real features, not zeros
        np.testing.assert_allclose(rows, ref, atol=1e-3, rtol=1e-3)
    # the chunk grid starts at frame 0: chunk 1 of vid_b alone gives rows 16..31
    src = open_source(data.videos / "vid_b.mp4", FPS, tuple(cfg.frame_size))
    chunk = test_transform(src.read(32, 64), cfg.crop_size, cfg.mean, cfg.std)
    src.close()
    with torch.inference_mode():
        one = backbone.forward_chunks(chunk[None])[0].T.numpy()  # [16, C]
    np.testing.assert_allclose(bank.read("vid_b", 16, 16, dtype="float32"), one, atol=1e-3, rtol=1e-3)


def test_rebuild_is_identical_in_eval_mode(data: Data, tmp_path: Path) -> None:
    """drop_path_rate is 0.1 in the demo config: only eval mode makes a rebuild repeat."""
    assert data.cfg.model.backbone.drop_path_rate > 0
    report = build_bank(data.cfg, tmp_path / "again", weights=data.weights, batch_chunks=4,
                        progress=False)
    assert report.built == list(TRAIN)
    a, b = MemoryBank.open(data.bank_dir), MemoryBank.open(tmp_path / "again")
    for vid in TRAIN:
        assert np.array_equal(a.read(vid, 0, a.num_rows(vid)), b.read(vid, 0, b.num_rows(vid)))
    assert a.fingerprint() == b.fingerprint()


def test_resume_recomputes_only_the_unfinished_video(data: Data, tmp_path: Path) -> None:
    bank_dir = tmp_path / "bank"
    shutil.copytree(data.bank_dir, bank_dir)
    bank = MemoryBank.open(bank_dir, "r+")
    bank.write("vid_b", 0, np.zeros((bank.num_rows("vid_b"), 192), np.float32))  # lost progress
    bank.mark_complete("vid_b", False)
    bank.close()
    backbone = _backbone(data)
    counter = ChunkCounter(backbone)
    report = build_bank(data.cfg, bank_dir, weights=data.weights, batch_chunks=1,
                        backbone=backbone, progress=False)
    assert report.built == ["vid_b"]
    assert report.skipped == ["vid_a", "vid_c"]
    assert counter.calls == CHUNKS["vid_b"]
    assert counter.chunks == CHUNKS["vid_b"]
    ref, got = MemoryBank.open(data.bank_dir), MemoryBank.open(bank_dir)
    assert got.is_complete("vid_b")
    np.testing.assert_allclose(got.read("vid_b", 0, 36, dtype="float32"),
                               ref.read("vid_b", 0, 36, dtype="float32"), atol=1e-3)


def test_interrupted_build_resumes(data: Data, tmp_path: Path) -> None:
    """Interrupt inside vid_b (its 2nd chunk): vid_a is finished, vid_b half-written and
    not finished; the re-run redoes vid_b from its first chunk and builds vid_c."""
    bank_dir = tmp_path / "bank"
    backbone = _backbone(data)
    counter = ChunkCounter(backbone, fail_at=CHUNKS["vid_a"] + 2)
    with pytest.raises(KeyboardInterrupt):
        build_bank(data.cfg, bank_dir, weights=data.weights, batch_chunks=1, backbone=backbone,
                   progress=False)
    counter.handle.remove()
    half = MemoryBank.open(bank_dir)
    assert half.is_complete("vid_a")
    assert not half.is_complete("vid_b")
    assert not half.is_complete("vid_c")
    assert np.abs(half.read("vid_b", 0, 16, dtype="float32")).max() > 0  # chunk 0 written
    counter = ChunkCounter(backbone)
    report = build_bank(data.cfg, bank_dir, weights=data.weights, batch_chunks=1,
                        backbone=backbone, progress=False)
    assert report.skipped == ["vid_a"]
    assert report.built == ["vid_b", "vid_c"]
    assert counter.chunks == CHUNKS["vid_b"] + CHUNKS["vid_c"]
    ref, got = MemoryBank.open(data.bank_dir), MemoryBank.open(bank_dir)
    for vid in TRAIN:
        assert got.is_complete(vid)
        np.testing.assert_allclose(got.read(vid, 0, got.num_rows(vid), dtype="float32"),
                                   ref.read(vid, 0, ref.num_rows(vid), dtype="float32"), atol=1e-3)


def test_backbone_mode_is_restored(data: Data, tmp_path: Path) -> None:
    backbone = _backbone(data).train()
    build_bank(data.cfg, tmp_path / "b", weights=data.weights, backbone=backbone,
               videos=["vid_a"], progress=False)
    assert backbone.training
    assert MemoryBank.open(tmp_path / "b").videos == ["vid_a"]


def test_failed_videos_are_reported_and_the_rest_built(data: Data, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(data.videos / "vid_a.mp4", videos / "vid_a.mp4")
    (videos / "vid_bad.mp4").write_bytes(np.random.default_rng(0).bytes(5000))  # corrupt
    ann = _annotations(tmp_path / "ann.json", ["vid_missing", "vid_a", "vid_bad"])
    cfg = _config(ann, videos)
    report = build_bank(cfg, tmp_path / "lib", weights=data.weights, progress=False)
    assert report.built == ["vid_a"]
    assert not report.ok
    assert set(report.failed) == {"vid_missing", "vid_bad"}
    assert "vid_missing" in report.failed["vid_missing"]  # names the id and what was tried
    assert "vid_bad.mp4" in report.failed["vid_bad"]  # names the file
    assert MemoryBank.open(tmp_path / "lib").videos == ["vid_a"]

    code = main(["bank", "build", "--config", str(DEMO), "--out", str(tmp_path / "cli"),
                 "--weights", str(data.weights), "--no-progress",
                 f"data.annotations={ann}", f"data.videos={videos}", "model.num_classes=1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "1 built" in out
    assert "2 failed" in out
    assert "vid_missing" in err
    assert "vid_bad" in err
    assert "vid_a:" not in err
    assert MemoryBank.open(tmp_path / "cli").is_complete("vid_a")


def test_video_failing_mid_way_is_not_marked_complete(data: Data, tmp_path: Path) -> None:
    """A frame folder (original layout) whose 41st image is corrupt fails in its 2nd chunk,
    while its 1st chunk waits in the batch: that chunk is dropped, the video stays
    unfinished, and the next video (in the same batch) is built."""
    from helpers import index_image
    from tallformer.data.video import save_image

    videos = tmp_path / "videos"
    frames = videos / "vid_frames"
    frames.mkdir(parents=True)
    for i in range(70):
        save_image(frames / f"{i + 1:05d}.png", index_image(i, (64, 64)))
    (frames / "00041.png").write_bytes(b"not a png")
    shutil.copy(data.videos / "vid_a.mp4", videos / "vid_a.mp4")
    cfg = _config(_annotations(tmp_path / "ann.json", ["vid_frames", "vid_a"]), videos)
    backbone = _backbone(data)
    counter = ChunkCounter(backbone)
    report = build_bank(cfg, tmp_path / "bank", weights=data.weights, batch_chunks=8,
                        backbone=backbone, progress=False)
    assert list(report.failed) == ["vid_frames"]
    assert "00041.png" in report.failed["vid_frames"]
    assert report.built == ["vid_a"]
    assert report.chunks == counter.chunks == CHUNKS["vid_a"]
    bank = MemoryBank.open(tmp_path / "bank")
    assert bank.num_frames("vid_frames") == 70
    assert not bank.is_complete("vid_frames")
    assert np.abs(bank.read("vid_frames", 0, 35, dtype="float32")).max() == 0
    assert bank.is_complete("vid_a")


def test_settings_mismatch_and_bad_inputs(data: Data, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bank_dir = tmp_path / "bank"
    shutil.copytree(data.bank_dir, bank_dir)
    other = load_config(DEMO, [f"data.annotations={data.ann}", f"data.videos={data.videos}",
                               "memory.dtype=float32"])
    code = main(["bank", "build", "--config", "demo", "--out", str(bank_dir), "--no-progress",
                 "--weights", str(data.weights), f"data.annotations={data.ann}",
                 f"data.videos={data.videos}", "memory.dtype=float32",
                 "model.backbone.drop_path_rate=0.2", "model.num_classes=1"])
    assert code == 2
    err = capsys.readouterr().err
    # one line naming only the settings that differ, old -> new
    assert err == (
        f"error: {bank_dir / 'meta.json'}: the existing bank was built with other settings "
        "(dtype: 'float16' -> 'float32'; backbone.drop_path_rate: 0.1 -> 0.2; bank -> asked "
        "for); build into another folder, or delete this one to rebuild it\n"
    )
    with pytest.raises(BuildError, match=r"data\.videos"):
        build_bank(load_config(DEMO, [f"data.annotations={data.ann}"]), tmp_path / "x")
    with pytest.raises(BuildError, match=r"data\.annotations"):
        build_bank(load_config(DEMO, [f"data.videos={data.videos}"]), tmp_path / "x")
    with pytest.raises(BuildError, match="nope"):
        build_bank(other, tmp_path / "x", videos=["nope"], weights=data.weights)
    with pytest.raises(BuildError, match="batch_chunks"):
        build_bank(other, tmp_path / "x", batch_chunks=0)
    assert not (tmp_path / "x").exists()


def test_bank_info(data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bank", "info", str(data.bank_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    bank = MemoryBank.open(data.bank_dir)
    assert info["videos"] == 3
    assert info["complete"] == 3
    assert info["incomplete"] == []
    assert info["rows"] == sum(math.ceil(n / 2) for n in TRAIN.values())
    assert info["feature_dim"] == 192
    assert info["dtype"] == "float16"
    assert info["fingerprint"] == bank.fingerprint()
    assert info["weights"] == str(data.weights)
    files = sum(p.stat().st_size for p in (data.bank_dir / "features").iterdir())
    assert info["disk_bytes"] == files + (data.bank_dir / "meta.json").stat().st_size

    half = tmp_path / "half"
    shutil.copytree(data.bank_dir, half)
    MemoryBank.open(half, "r+").mark_complete("vid_c", False)
    assert main(["bank", "info", str(half)]) == 0
    out = capsys.readouterr().out
    assert "3 (2 complete)" in out
    assert "incomplete    vid_c" in out
    assert "dim 192, float16" in out
    assert bank.fingerprint() not in out

    assert main(["bank", "info", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no memory bank at ")
    assert "meta.json not found" in err


@pytest.mark.parametrize("action", ["build", "info"])
def test_help_has_examples(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bank", action, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"tallformer bank {action}" in out


class FailingBackbone:
    """Forward pre-hook on the patch embedding that raises a RuntimeError on every call in
    ``fail_calls`` (e.g. out of memory on one batch)."""

    def __init__(self, backbone: VideoSwinBackbone, fail_calls: set[int]) -> None:
        self.calls = 0
        self.fail_calls = fail_calls
        backbone.patch_embed.register_forward_pre_hook(self)

    def __call__(self, module: torch.nn.Module, inputs: tuple[torch.Tensor]) -> None:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise RuntimeError("simulated backbone failure")


@pytest.mark.parametrize("batch_chunks", [3, 8])
def test_backbone_failure_on_a_batch_fails_every_video_in_it(data: Data, tmp_path: Path,
                                                            batch_chunks: int) -> None:
    """A batch spans videos: when the backbone fails on it, every video with a chunk in it
    is reported failed (none is silently left unfinished), the others are built, and a
    failure in the last batch does not abort the build. Batch 3: [a0 a1 c0] fails, then
    [c1] is skipped (c failed) and vid_b is built. Batch 8: one final batch of all 7 chunks
    fails."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for vid in ("vid_a", "vid_c", "vid_b"):
        shutil.copy(data.videos / f"{vid}.mp4", videos / f"{vid}.mp4")
    cfg = _config(_annotations(tmp_path / "ann.json", ["vid_a", "vid_c", "vid_b"]), videos)
    backbone = _backbone(data)
    FailingBackbone(backbone, {1})
    report = build_bank(cfg, tmp_path / "bank", weights=data.weights, batch_chunks=batch_chunks,
                        backbone=backbone, progress=False)
    bank = MemoryBank.open(tmp_path / "bank")
    lost = ["vid_a", "vid_c"] if batch_chunks == 3 else ["vid_a", "vid_b", "vid_c"]
    assert sorted(report.failed) == lost
    assert not report.ok
    assert all("simulated backbone failure" in report.failed[v] for v in lost)
    assert report.built == [v for v in ("vid_b",) if v not in lost]
    assert set(report.built) | set(report.failed) == {"vid_a", "vid_c", "vid_b"}
    for v in ("vid_a", "vid_c", "vid_b"):
        assert bank.is_complete(v) == (v in report.built)
    # a re-run builds the failed videos and skips the finished one
    again = build_bank(cfg, tmp_path / "bank", weights=data.weights, batch_chunks=batch_chunks,
                       backbone=_backbone(data), progress=False)
    assert again.ok
    assert sorted(again.built) == lost


def test_a_video_with_its_own_fps_is_decoded_at_that_rate(data: Data, tmp_path: Path) -> None:
    """An annotation's own fps (e.g. ActivityNet's 768-frame videos) sets the decode rate
    of the bank build, as it does for the dataset, so the rows match what training reads."""
    ann = json.loads(data.ann.read_text())
    ann["database"]["vid_b"]["fps"] = 7.5
    path = tmp_path / "ann_fps.json"
    path.write_text(json.dumps(ann))
    cfg = _config(path, data.videos)
    report = build_bank(cfg, tmp_path / "bank", weights=data.weights, videos=["vid_b"], progress=False)
    assert report.ok
    frames = len(open_source(data.videos / "vid_b.mp4", 7.5, (64, 64)))
    assert frames == 36  # 71 frames at 15 fps -> 36 at 7.5
    bank = MemoryBank.open(tmp_path / "bank")
    assert bank.num_frames("vid_b") == frames
    assert bank.num_rows("vid_b") == math.ceil(frames / 2)


def test_sources_are_recorded_and_another_dataset_is_refused(data: Data, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Another dataset whose videos share ids with the bank's is refused (naming the videos
    that differ), not mixed in; --overwrite rebuilds those videos."""
    bank = MemoryBank.open(data.bank_dir)
    size = (data.videos / "vid_a.mp4").stat().st_size
    assert bank.meta["videos"]["vid_a"]["source"] == {"name": "vid_a.mp4", "bytes": size}
    bank_dir = tmp_path / "bank"
    shutil.copytree(data.bank_dir, bank_dir)
    other = tmp_path / "other_videos"  # the same ids, other content (vid_b: other length)
    other.mkdir()
    write_video(other / "vid_a.mp4", 40, fps=FPS, size=(64, 64), gop=8)
    write_video(other / "vid_b.mp4", 60, fps=FPS)
    shutil.copy(data.videos / "vid_c.mp4", other / "vid_c.mp4")
    args = ["bank", "build", "--config", "demo", "--out", str(bank_dir), "--no-progress",
            "--weights", str(data.weights), f"data.annotations={data.ann}", f"data.videos={other}",
            "model.num_classes=1"]
    before = (bank_dir / "meta.json").read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bank_dir}: 2 video(s) in this bank were built from other files")
    assert "vid_a (source.bytes: " in err
    assert "vid_b (71 -> 60 frames, source.bytes: " in err
    assert "vid_c" not in err
    assert "--overwrite" in err
    assert (bank_dir / "meta.json").read_bytes() == before  # nothing changed
    assert main([*args, "--overwrite"]) == 0
    assert "2 built, 1 skipped" in capsys.readouterr().out
    rebuilt = MemoryBank.open(bank_dir)
    assert rebuilt.num_frames("vid_b") == 60
    assert rebuilt.meta["videos"]["vid_a"]["source"]["bytes"] == (other / "vid_a.mp4").stat().st_size
    assert all(rebuilt.is_complete(v) for v in TRAIN)


def test_weights_path_spelled_another_way_resumes(data: Data, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`./x.pth` and its absolute path are the same weights file: the bank is resumed."""
    bank_dir = tmp_path / "bank"
    shutil.copytree(data.bank_dir, bank_dir)
    monkeypatch.chdir(data.weights.parent)
    report = build_bank(data.cfg, bank_dir, weights=f"./{data.weights.name}", progress=False)
    assert report.skipped == list(TRAIN)
    assert MemoryBank.open(bank_dir).weights == str(data.weights)  # meta not rewritten


def test_missing_videos_folder_is_one_error_and_leaves_no_bank(data: Data, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bank"
    code = main(["bank", "build", "--config", "demo", "--out", str(out), "--no-progress",
                 f"data.annotations={data.ann}", f"data.videos={tmp_path / 'nope'}", "model.num_classes=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err == (f"error: data.videos: folder {tmp_path / 'nope'} does not exist; give the "
                   "folder of videos (or frame folders) as data.videos=DIR (nothing was built)\n")
    assert not out.exists()
    # a folder that holds none of the videos: one error too, and no bank that would lock
    # the settings of the next (fixed) run
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = _config(data.ann, empty)
    with pytest.raises(BuildError, match=r"none of the 3 training videos could be read \(the first, vid_a: "):
        build_bank(cfg, out, weights=data.weights, progress=False)
    assert not out.exists()
    assert build_bank(data.cfg, out, weights=data.weights, progress=False, videos=["vid_a"]).ok


# config keys that `bank build` reads (the others have no effect on a bank)
BUILD_KEYS = ("data.annotations", "data.videos", "data.train_subset", "data.fps",
              "data.frame_size", "data.crop_size", "data.mean", "data.std", "memory.dtype",
              "model.backbone.", "seed")


def test_build_help_overrides_are_keys_it_uses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bank", "build", "--help"])
    out = capsys.readouterr().out
    keys = re.findall(r"\b([a-z_]+(?:\.[a-z_]+)+)=", out)
    assert {"data.annotations", "data.videos", "memory.dtype"} <= set(keys)
    for key in keys:
        assert key.startswith(BUILD_KEYS), key
    assert "--config thumos14_swin_b " in out  # a shipped config by name
    assert "--overwrite" in out


def test_device_errors_name_the_option() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"^--device: 'gpu' is not a device \(use auto, cpu"):
        resolve_device("gpu", what="--device")
    with pytest.raises(DeviceError, match=r"^train\.device: 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match=r"CUDA is not available; use --device cpu$"):
            resolve_device("cuda", what="--device")
        with pytest.raises(DeviceError, match=r"use train\.device=cpu$"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(DeviceError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_no_weights_is_a_warning_and_seeded(data: Data, tmp_path: Path) -> None:
    """Without weights the bank holds a random backbone's features, seeded by cfg.seed (so
    a resumed build runs the same network): said once, as a TallformerWarning."""
    with pytest.warns(TallformerWarning, match=r"randomly initialised backbone \(seed 10\)"):
        first = build_bank(data.cfg, tmp_path / "a", videos=["vid_a"], progress=False)
    with pytest.warns(TallformerWarning):
        build_bank(data.cfg, tmp_path / "b", videos=["vid_a"], progress=False)
    assert first.ok
    a, b = MemoryBank.open(tmp_path / "a"), MemoryBank.open(tmp_path / "b")
    assert a.weights is None
    assert np.array_equal(a.read("vid_a", 0, 20), b.read("vid_a", 0, 20))


def test_an_empty_training_subset_is_an_error(data: Data, tmp_path: Path) -> None:
    cfg = load_config(DEMO, [f"data.annotations={data.ann}", f"data.videos={data.videos}",
                             "data.train_subset=validation"])
    with pytest.raises(TallformerError, match="validation"):  # from the annotations
        build_bank(cfg, tmp_path / "bank", weights=data.weights, progress=False)
    assert not (tmp_path / "bank").exists()


# --------------------------------------------------------------------------- one build per folder, full disks


def _cli_build(data: Data, out: Path, *extra: str) -> list[str]:
    return ["bank", "build", "--config", "demo", "--out", str(out), "--weights", str(data.weights),
            "--batch-chunks", "4", "--no-progress", f"data.annotations={data.ann}", f"data.videos={data.videos}",
            "model.num_classes=1", *extra]


def _same_bank(a: Path, b: Path) -> None:
    ma, mb = MemoryBank.open(a), MemoryBank.open(b)
    assert ma.fingerprint() == mb.fingerprint()
    for video in TRAIN:
        assert np.array_equal(ma.read(video, 0, ma.num_rows(video)), mb.read(video, 0, mb.num_rows(video)))


def _env() -> dict[str, str]:
    import os

    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))


def test_a_class_count_that_does_not_fit_the_annotations_is_one_line(data: Data, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The check `train` makes, made by `bank build` before it builds anything."""
    args = _cli_build(data, tmp_path / "bank")
    assert main([*args, "model.num_classes=5"]) == 2
    assert capsys.readouterr().err == (f"error: {data.ann} has 1 classes but model.num_classes is 5; "
                                       "set model.num_classes=1\n")
    assert not (tmp_path / "bank").exists()


def test_a_second_build_into_a_folder_being_built_is_refused(data: Data, tmp_path: Path) -> None:
    """Build A stops itself (SIGSTOP) right after taking the folder; build B into the same
    folder is refused in one line naming A; A then ends with the bank a build alone gives."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "bank"
    driver = tmp_path / "pause_after_lock.py"
    driver.write_text(
        "import contextlib, os, signal, sys\n"
        "import tallformer.engine.run_lock as run_lock\n"
        "real = run_lock.hold_folder\n"
        "@contextlib.contextmanager\n"
        "def hold(*args, **kwargs):\n"
        "    with real(*args, **kwargs) as folder:\n"
        "        os.kill(os.getpid(), signal.SIGSTOP)\n"
        "        yield folder\n"
        "run_lock.hold_folder = hold\n"
        "from tallformer.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    first = subprocess.Popen([sys.executable, str(driver), *_cli_build(data, out)], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while Path(f"/proc/{first.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = subprocess.run([sys.executable, "-m", "tallformer", *_cli_build(data, out)], env=_env(),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        (line,) = second.stderr.splitlines()
        assert line.startswith(f"error: {out} is in use by tallformer bank build (pid {first.pid} on host "), line
        assert line.endswith("), or choose another --out"), line
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    _same_bank(out, data.bank_dir)


def test_a_bank_too_big_for_its_disk_is_one_line_and_a_rerun_with_space_finishes_it(data: Data,
                                                                                    tmp_path: Path) -> None:
    """A real small file system with less free space than the bank needs: the build stops
    before the backbone runs, in one line with the numbers (it used to die of SIGBUS,
    writing memory-mapped rows the disk could not hold); freed, the same command builds
    the bank a build elsewhere gives."""
    import subprocess
    import sys

    from helpers import SmallDisk

    disk = SmallDisk(tmp_path / "disk", "1m")
    try:
        disk.fill(leave=40 * 1024)  # room for the files' headers and meta.json, not for the rows
        out = disk.path / "bank"
        command = [sys.executable, "-m", "tallformer", *_cli_build(data, out)]
        proc = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
        (line,) = proc.stderr.splitlines()
        found = re.fullmatch(rf"error: no space left on tmpfs at {re.escape(str(disk.path))} for the memory bank "
                             rf"{re.escape(str(out))}: needs (\d+\.\d) kB, (\d+\.\d) kB free; free space there "
                             r"or choose another --out", line)
        assert found, line
        assert float(found[1]) > 41 > float(found[2]) > 30  # 88 rows of 192 fp16 features, 40 KiB left
        assert not (out / "meta.json").exists()
        disk.free()
        proc = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _same_bank(out, data.bank_dir)
    finally:
        disk.unmount()


def test_a_disk_that_fills_up_during_the_build_keeps_the_finished_videos(data: Data, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up (another program) once the first video is finished: the build
    stops with one error naming the file and the cause; the finished video stays finished,
    and a re-run with space again gives the whole bank."""
    from helpers import SmallDisk
    from tallformer.errors import OutputError

    disk = SmallDisk(tmp_path / "disk", "1m")
    try:
        out = disk.path / "bank"
        real = MemoryBank.mark_complete

        def then_fill(self: MemoryBank, video: str, complete: bool = True) -> None:
            real(self, video, complete)
            disk.fill()  # every byte left, for the next write

        monkeypatch.setattr(MemoryBank, "mark_complete", then_fill)
        with pytest.raises(OutputError) as caught:
            build_bank(data.cfg, out, weights=data.weights, batch_chunks=2, progress=False)
        message = str(caught.value)
        assert message.startswith(f"cannot write {out / 'meta.json'}: no space left on the device ("), message
        assert "\n" not in message
        monkeypatch.undo()
        bank = MemoryBank.open(out)
        assert bank.is_complete("vid_a")
        assert not bank.is_complete("vid_b")
        disk.free()
        report = build_bank(data.cfg, out, weights=data.weights, progress=False)
        assert report.skipped == ["vid_a"]
        assert report.ok
        _same_bank(out, data.bank_dir)
    finally:
        disk.unmount()
