"""One memory-bank training step on the tiny config: exactly the kept chunks' bank rows change
(to the fresh features), only the kept chunks' frames are decoded, keep_ratio 0 runs no
backbone, keep_ratio 1 reads no bank, memory.frozen writes nothing."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import tallformer.data.dataset as D
from helpers import train_epochs
from tallformer.config import ConfigError, load_config, shipped_config_path
from tallformer.data.annotations import load_annotations
from tallformer.data.synthetic import generate_synthetic_dataset
from tallformer.data.video import open_source
from tallformer.engine.factory import build_detector
from tallformer.engine.loader import make_train_loader
from tallformer.engine.optim import make_optimizer
from tallformer.engine.run_bank import training_frame_counts
from tallformer.engine.step import NonFiniteLossError, train_step, write_back
from tallformer.memory.bank import BankError, MemoryBank

CHUNK = 32
RPC = CHUNK // 2  # bank rows per chunk


class CountingBank(MemoryBank):
    """The real bank, counting `read_chunks` calls (the dataset's feature_reader)."""

    reads = 0

    def read_chunks(self, *args, **kwargs):  # type: ignore[override]
        CountingBank.reads += 1
        return super().read_chunks(*args, **kwargs)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("synth")
    ann_path = generate_synthetic_dataset(out, 4, seed=0, min_length=12, max_length=16,
                                          val_fraction=0.25, progress=False)
    ann = load_annotations(ann_path)
    data = {"annotations": ann, "ann_path": ann_path, "videos": out / "videos"}
    data["frames"] = training_frame_counts(_cfg(data, 1.0), ann)  # at 15 fps, 64x64
    return data


def _cfg(data: dict, keep_ratio: float, *extra: str):
    return load_config(shipped_config_path("demo"), [
        f"data.annotations={data['ann_path']}", f"data.videos={data['videos']}",
        "data.num_workers=0", "data.batch_size=2", "model.backbone.drop_path_rate=0",
        f"memory.keep_ratio={keep_ratio}", *extra,
    ])


def _bank(path: Path, frames: dict[str, int]) -> CountingBank:
    bank = MemoryBank.create(path, frames, 192)
    rng = np.random.default_rng(0)
    for video, n in frames.items():
        bank.write(video, 0, rng.standard_normal((-(-n // 2), 192)).astype(np.float32))
        bank.mark_complete(video)
    return CountingBank.open(path, "r+")


def _snapshot(bank: MemoryBank) -> dict[str, np.ndarray]:
    return {v: bank.read(v, 0, bank.num_rows(v)) for v in bank.videos}


class _Recorder:
    """Wraps the real open_source: records which frames were read, per video."""

    def __init__(self) -> None:
        self.frames: dict[str, set[int]] = {}

    def open(self, path, fps, size):
        source = open_source(path, fps, size)
        real = source.read

        def read(start: int, stop: int) -> np.ndarray:
            self.frames.setdefault(Path(path).stem, set()).update(range(start, stop))
            return real(start, stop)

        source.read = read
        return source


def _first_batch(cfg, data, bank, monkeypatch) -> tuple[dict, _Recorder]:
    rec = _Recorder()
    monkeypatch.setattr(D, "open_source", rec.open)
    loader = make_train_loader(cfg, data["annotations"], bank)
    loader.set_epoch(0)
    batch = next(iter(loader))
    return batch, rec


@pytest.mark.parametrize(("keep_ratio", "num_keep"), [(0.0, 0), (0.5, 2), (1.0, 4)])
def test_step_changes_exactly_the_kept_rows(data, tmp_path, monkeypatch, keep_ratio, num_keep):
    cfg = _cfg(data, keep_ratio)
    bank = _bank(tmp_path / "bank", data["frames"])
    CountingBank.reads = 0
    batch, rec = _first_batch(cfg, data, bank, monkeypatch)
    num_chunks = cfg.data.num_frames // CHUNK
    b = len(batch["video_id"])
    assert b == 2
    assert len(set(batch["video_id"])) == 2
    assert [len(k) for k in batch["keep"]] == [num_keep] * b

    # the bank was read for the dropped chunks only (none at keep_ratio 1)
    assert CountingBank.reads == (b if num_keep < num_chunks else 0)
    assert batch["cached"].shape[1] == (num_chunks - num_keep if num_keep < num_chunks else 0)

    # only the kept chunks' frames were decoded
    for video, offset, keep in zip(batch["video_id"], batch["offset"], batch["keep"], strict=True):
        n = data["frames"][video]
        want = {f for c in keep.tolist() for f in range(offset + CHUNK * c, offset + CHUNK * (c + 1))
                if f < n}
        assert rec.frames.get(video, set()) == want
    if num_keep == 0:
        assert not rec.frames

    torch.manual_seed(0)
    model = build_detector(cfg)
    optimizer = make_optimizer(model, cfg.train)
    with torch.no_grad():  # the fresh features the step will compute (no drop-path: deterministic)
        expected = model.backbone.forward_chunks(batch["chunks"]) if num_keep else None
    before = _snapshot(bank)
    stats = train_step(model, batch, optimizer, bank, frozen=cfg.memory.frozen, device="cpu")
    after = _snapshot(bank)

    assert np.isfinite(stats["loss"])
    assert stats["fresh_chunks"] == b * num_keep
    assert stats["written_chunks"] == b * num_keep
    backbone_grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    if num_keep == 0:
        assert all(g is None for g in backbone_grads), "keep_ratio 0 must not run the backbone"
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in backbone_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())

    expected_rows: dict[str, set[int]] = {v: set() for v in bank.videos}
    pos = 0
    for video, offset, keep in zip(batch["video_id"], batch["offset"], batch["keep"], strict=True):
        for c in keep.tolist():
            rows = np.arange(offset // 2 + RPC * c, offset // 2 + RPC * (c + 1))
            inside = rows < bank.num_rows(video)
            expected_rows[video].update(rows[inside].tolist())
            # the bank holds the fresh features of that chunk (fp16)
            want = expected[pos].T.numpy()[inside].astype(np.float16)
            np.testing.assert_allclose(after[video][rows[inside]], want, rtol=2e-3, atol=2e-3)
            pos += 1
    for video in bank.videos:
        changed = set(np.flatnonzero((after[video] != before[video]).any(axis=1)).tolist())
        assert changed == expected_rows[video], f"{video}: rows changed {sorted(changed)}"
    if num_keep == num_chunks:  # a whole window in range was rewritten
        video, offset = batch["video_id"][0], batch["offset"][0]
        top = min(offset // 2 + num_chunks * RPC, bank.num_rows(video))
        assert expected_rows[video] == set(range(offset // 2, top))


def test_frozen_memory_writes_nothing(data, tmp_path, monkeypatch):
    cfg = _cfg(data, 0.5, "memory.frozen=true")
    bank = _bank(tmp_path / "bank", data["frames"])
    batch, _ = _first_batch(cfg, data, bank, monkeypatch)
    torch.manual_seed(0)
    model = build_detector(cfg)
    before = _snapshot(bank)
    stats = train_step(model, batch, make_optimizer(model, cfg.train), bank,
                       frozen=cfg.memory.frozen, device="cpu")
    assert stats["written_chunks"] == 0
    assert stats["fresh_chunks"] == 4
    after = _snapshot(bank)
    assert all(np.array_equal(before[v], after[v]) for v in bank.videos)


def test_cached_features_are_the_bank_rows_of_dropped_chunks(data, tmp_path, monkeypatch):
    cfg = _cfg(data, 0.5)
    bank = _bank(tmp_path / "bank", data["frames"])
    batch, _ = _first_batch(cfg, data, bank, monkeypatch)
    for i, (video, offset, keep) in enumerate(zip(batch["video_id"], batch["offset"], batch["keep"], strict=True)):
        dropped = [c for c in range(4) if c not in keep.tolist()]
        rows = bank.read_chunks(video, offset // 2, dropped).astype(np.float32)
        np.testing.assert_array_equal(batch["cached"][i].numpy(), rows)
    # and the keep mask matches the kept ids
    for i, keep in enumerate(batch["keep"]):
        assert batch["keep_mask"][i].nonzero().flatten().tolist() == keep.tolist()


def test_loader_needs_a_bank_when_chunks_are_dropped(data):
    with pytest.raises(ConfigError, match=r"memory\.bank_dir"):
        make_train_loader(_cfg(data, 0.5), data["annotations"], None)
    # keep_ratio 1 drops nothing: no bank needed
    loader = make_train_loader(_cfg(data, 1.0), data["annotations"], None)
    assert len(loader) == 2  # 3 training videos, batch 2: the second step is padded


def test_write_back_row_arithmetic(tmp_path):
    bank = MemoryBank.create(tmp_path / "b", {"v": 100}, 4)  # 50 rows
    fresh = torch.arange(3 * 4 * RPC, dtype=torch.float32).reshape(3, 4, RPC)
    # sample 0 (offset 10 -> row 5): chunks 0 (rows 5-20) and 2 (rows 37-52, cut at 50);
    # sample 1 (offset 42 -> row 21): chunk 0 (rows 21-36)
    n = write_back(bank, ["v", "v"], [10, 42], [torch.tensor([0, 2]), torch.tensor([0])], fresh)
    assert n == 3
    rows = bank.read("v", 0, 50).astype(np.float32)
    assert not rows[:5].any()
    np.testing.assert_array_equal(rows[5:21], fresh[0].T.numpy())
    np.testing.assert_array_equal(rows[37:50], fresh[1].T.numpy()[:13])
    np.testing.assert_array_equal(rows[21:37], fresh[2].T.numpy())
    with pytest.raises(ValueError, match="fresh feature chunks"):
        write_back(bank, ["v"], [0], [[0, 1]], fresh[:1])
    # one video id, offset and kept-chunk list per sample
    with pytest.raises(ValueError, match="2 video ids, 1 offsets and 2 kept-chunk lists"):
        write_back(bank, ["v", "v"], [10], [[0], [1]], fresh[:2])
    with pytest.raises(BankError, match=r"\[C, rows\] = \[4, 8\]"):
        write_back(bank, ["v"], [0], [[0]], fresh[:1, :, :8])
    assert np.array_equal(bank.read("v", 0, 50).astype(np.float32), rows)  # nothing written


def test_minimal_loop_with_workers(data, tmp_path):
    """Two epochs through DataLoader workers (bank read in the workers); losses finite,
    every step writes its kept chunks."""
    cfg = _cfg(data, 0.5, "data.num_workers=1")
    bank = _bank(tmp_path / "bank", data["frames"])
    torch.manual_seed(0)
    model = build_detector(cfg)
    loader = make_train_loader(cfg, data["annotations"], bank)
    before = _snapshot(bank)
    written: dict[str, set[int]] = {v: set() for v in bank.videos}

    def on_step(epoch: int, step: int, batch: dict, stats: dict) -> None:
        for video, offset, keep in zip(batch["video_id"], batch["offset"], batch["keep"], strict=True):
            for c in keep.tolist():
                start = offset // 2 + RPC * c
                written[video].update(r for r in range(start, start + RPC) if r < bank.num_rows(video))

    history = train_epochs(cfg, model, loader, make_optimizer(model, cfg.train), bank,
                           epochs=2, max_steps=3, on_step=on_step)
    assert len(history) == 3
    assert all(np.isfinite(h["loss"]) and h["written_chunks"] == 4 for h in history)
    after = _snapshot(bank)
    # exactly the kept chunks' rows of the three steps changed, in every video
    for video in bank.videos:
        changed = set(np.flatnonzero((after[video] != before[video]).any(axis=1)).tolist())
        assert changed == written[video], video
    assert sum(map(len, written.values())) > 0


def test_non_finite_loss_writes_nothing_to_the_bank(data, tmp_path, monkeypatch):
    """A diverged step raises before the write-back: the run's bank copy (reused by --resume)
    never gets the step's (possibly NaN) fresh features."""
    cfg = _cfg(data, 0.5)
    bank = _bank(tmp_path / "bank", data["frames"])
    batch, _ = _first_batch(cfg, data, bank, monkeypatch)
    torch.manual_seed(0)
    model = build_detector(cfg)
    real_loss = model.loss

    def nan_loss(*args, **kwargs):
        losses = real_loss(*args, **kwargs)
        return {k: v * float("nan") for k, v in losses.items()}

    monkeypatch.setattr(model, "loss", nan_loss)
    before = _snapshot(bank)
    with pytest.raises(NonFiniteLossError, match="nothing was written"):
        train_step(model, batch, make_optimizer(model, cfg.train), bank, device="cpu")
    after = _snapshot(bank)
    assert all(np.array_equal(before[v], after[v]) for v in bank.videos)


def _step_copy(cfg, batch, model, amp_dtype, scaler, grad_clip):
    """One real `train_step` on a copy of `model`: (stats, the stepped copy)."""
    model = copy.deepcopy(model)
    optimizer = make_optimizer(model, cfg.train)
    torch.manual_seed(1)  # the same dropout / drop-path draws in every call
    stats = train_step(model, batch, optimizer, None, device="cpu", amp_dtype=amp_dtype,
                       grad_clip=grad_clip, scaler=scaler)
    return stats, model


def _underflows(model, ref) -> int:
    """Gradient entries that are 0 in `model` but not in the fp32 `ref`."""
    return sum(int(((p.grad == 0) & (q.grad != 0)).sum())
               for p, q in zip(model.parameters(), ref.parameters(), strict=True) if q.grad is not None)


def test_fp16_step_scales_the_loss_and_unscales_before_clip_and_step(data, tmp_path, monkeypatch):
    """The real `train_step` with a real `GradScaler` (fp16 autocast on the CPU), against the
    fp32 step: backward runs on the scaled loss (far fewer gradients underflow to 0 than in
    fp16 without a scaler), the gradients are unscaled before clipping and the step (the
    norm and the update are the fp32 step's to fp16 precision, not 2**12 times them), and a
    step whose scaled gradients overflow is skipped and halves the scale."""
    cfg = _cfg(data, 0.5)
    batch, _ = _first_batch(cfg, data, _bank(tmp_path / "bank", data["frames"]), monkeypatch)
    torch.manual_seed(0)
    model = build_detector(cfg)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    fp32_stats, fp32 = _step_copy(cfg, batch, model, None, None, 1e9)
    _, unscaled = _step_copy(cfg, batch, model, torch.float16, None, 1e9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    stats, got = _step_copy(cfg, batch, model, torch.float16, scaler, 1e9)

    assert stats["loss"] == pytest.approx(fp32_stats["loss"], rel=1e-3)
    assert stats["grad_norm"] == pytest.approx(fp32_stats["grad_norm"], rel=1e-2)
    assert scaler.get_scale() == 2.0**12  # no overflow: kept (it grows after 2000 good steps)
    assert _underflows(unscaled, fp32) > 1000  # fp16 alone loses small gradients ...
    assert _underflows(got, fp32) * 10 < _underflows(unscaled, fp32)  # ... the scaler keeps them
    diff = sq = 0.0
    for name, p in got.named_parameters():
        want = dict(fp32.named_parameters())[name].detach() - start[name]
        diff += float(((p.detach() - start[name] - want) ** 2).sum())
        sq += float((want**2).sum())
    assert sq > 0
    assert (diff / sq) ** 0.5 < 0.1  # the update is the fp32 step's (fp16 precision)

    # a scale so large that the scaled gradients overflow fp16: the step is skipped
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)
    _, skipped = _step_copy(cfg, batch, model, torch.float16, scaler, None)
    assert scaler.get_scale() == 2.0**99  # backed off by 0.5
    for name, p in skipped.named_parameters():
        assert torch.equal(p.detach(), start[name]), name
