"""One memory-bank training step on the tiny config: exactly the kept chunks' bank rows change
(to the fresh features), only the kept chunks' frames are decoded, keep_ratio 0 runs no
backbone, keep_ratio 1 reads no bank, memory.frozen writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tallformer.data.dataset as D
from tallformer.config import load_config
from tallformer.data.annotations import load_annotations
from tallformer.data.synthetic import generate_synthetic_dataset
from tallformer.data.video import open_source, resolve_video
from tallformer.engine.step import (
    make_optimizer,
    make_train_loader,
    train_epochs,
    train_step,
    write_back,
)
from tallformer.memory.bank import MemoryBank
from tallformer.models.detector import build_detector

ROOT = Path(__file__).resolve().parents[1]
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
    frames = {}
    for v in ann.subset("training"):
        with open_source(resolve_video(out / "videos", v.video_id), 15.0, (64, 64)) as src:
            frames[v.video_id] = len(src)
    return {"annotations": ann, "ann_path": ann_path, "videos": out / "videos", "frames": frames}


def _cfg(data: dict, keep_ratio: float, *extra: str):
    return load_config(ROOT / "configs" / "demo.yaml", [
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


@pytest.mark.parametrize("keep_ratio,num_keep", [(0.0, 0), (0.5, 2), (1.0, 4)])
def test_step_changes_exactly_the_kept_rows(data, tmp_path, monkeypatch, keep_ratio, num_keep):
    cfg = _cfg(data, keep_ratio)
    bank = _bank(tmp_path / "bank", data["frames"])
    CountingBank.reads = 0
    batch, rec = _first_batch(cfg, data, bank, monkeypatch)
    num_chunks = cfg.data.num_frames // CHUNK
    b = len(batch["video_id"])
    assert b == 2 and len(set(batch["video_id"])) == 2
    assert [len(k) for k in batch["keep"]] == [num_keep] * b

    # the bank was read for the dropped chunks only (none at keep_ratio 1)
    assert CountingBank.reads == (b if num_keep < num_chunks else 0)
    assert batch["cached"].shape[1] == (num_chunks - num_keep if num_keep < num_chunks else 0)

    # only the kept chunks' frames were decoded
    for video, offset, keep in zip(batch["video_id"], batch["offset"], batch["keep"]):
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
    assert stats["fresh_chunks"] == b * num_keep and stats["written_chunks"] == b * num_keep
    backbone_grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    if num_keep == 0:
        assert all(g is None for g in backbone_grads), "keep_ratio 0 must not run the backbone"
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in backbone_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())

    expected_rows: dict[str, set[int]] = {v: set() for v in bank.videos}
    pos = 0
    for video, offset, keep in zip(batch["video_id"], batch["offset"], batch["keep"]):
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
    assert stats["written_chunks"] == 0 and stats["fresh_chunks"] == 4
    after = _snapshot(bank)
    assert all(np.array_equal(before[v], after[v]) for v in bank.videos)


def test_cached_features_are_the_bank_rows_of_dropped_chunks(data, tmp_path, monkeypatch):
    cfg = _cfg(data, 0.5)
    bank = _bank(tmp_path / "bank", data["frames"])
    batch, _ = _first_batch(cfg, data, bank, monkeypatch)
    for i, (video, offset, keep) in enumerate(zip(batch["video_id"], batch["offset"], batch["keep"])):
        dropped = [c for c in range(4) if c not in keep.tolist()]
        rows = bank.read_chunks(video, offset // 2, dropped).astype(np.float32)
        np.testing.assert_array_equal(batch["cached"][i].numpy(), rows)
    # and the keep mask matches the kept ids
    for i, keep in enumerate(batch["keep"]):
        assert batch["keep_mask"][i].nonzero().flatten().tolist() == keep.tolist()


def test_loader_needs_a_bank_when_chunks_are_dropped(data):
    with pytest.raises(ValueError, match="memory.bank_dir"):
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


def test_minimal_loop_with_workers(data, tmp_path):
    """Two epochs through DataLoader workers (bank read in the workers); losses finite,
    every step writes its kept chunks."""
    cfg = _cfg(data, 0.5, "data.num_workers=1")
    bank = _bank(tmp_path / "bank", data["frames"])
    torch.manual_seed(0)
    model = build_detector(cfg)
    loader = make_train_loader(cfg, data["annotations"], bank)
    before = _snapshot(bank)
    history = train_epochs(cfg, model, loader, make_optimizer(model, cfg.train), bank,
                           epochs=2, max_steps=3)
    assert len(history) == 3
    assert all(np.isfinite(h["loss"]) and h["written_chunks"] == 4 for h in history)
    after = _snapshot(bank)
    assert any(not np.array_equal(before[v], after[v]) for v in bank.videos)


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
    with pytest.raises(FloatingPointError, match="nothing was written"):
        train_step(model, batch, make_optimizer(model, cfg.train), bank, device="cpu")
    after = _snapshot(bank)
    assert all(np.array_equal(before[v], after[v]) for v in bank.videos)


def test_minimal_loop_scales_fp16_losses(data, tmp_path, monkeypatch):
    """fp16 autocast without a GradScaler underflows small gradients to zero: the loop
    passes one for fp16 (and none for bf16 / fp32)."""
    import tallformer.engine.step as S

    seen = []

    def fake_step(model, batch, optimizer, bank=None, **kw):
        seen.append((kw.get("amp_dtype"), kw.get("scaler")))
        return {"loss": 0.0}

    monkeypatch.setattr(S, "train_step", fake_step)
    cfg = _cfg(data, 1.0)
    loader = make_train_loader(cfg, data["annotations"], None)
    for amp in (torch.float16, torch.bfloat16, None):
        train_epochs(cfg, torch.nn.Linear(1, 1), loader, None, None, amp_dtype=amp, max_steps=1)
    assert seen[0][0] is torch.float16 and isinstance(seen[0][1], torch.amp.GradScaler)
    assert seen[1][1] is None and seen[2][1] is None
