"""The memory bank: files, slice reads/writes at the edges, validation, copies, fork."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tallformer.memory.bank import BankError, MemoryBank
from tallformer.ops.chunks import chunk_runs

C = 16


def _features(rows: int, seed: int = 0, c: int = C) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, c)).astype(np.float32)


@pytest.fixture
def bank(tmp_path: Path) -> MemoryBank:
    # 481 frames -> 241 rows (ceil, as the original: tools/data/extract_features.py:146-179);
    # 40 frames -> 20 rows
    return MemoryBank.create(tmp_path / "bank", {"long": 481, "short": 40}, C,
                             dtype="float32", backbone={"arch": "tiny"}, weights="w.pth")


def test_create_layout_and_meta(tmp_path: Path) -> None:
    b = MemoryBank.create(tmp_path / "b", {"vid": 481, "v/odd name": 3}, C)
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert meta["feature_dim"] == C
    assert meta["dtype"] == "float16"
    assert (meta["frames_per_row"], meta["chunk_size"], meta["rows_per_chunk"]) == (2, 32, 16)
    assert meta["fps"] == 15.0
    assert meta["videos"]["vid"]["num_rows"] == 241
    assert meta["videos"]["vid"]["num_frames"] == 481
    assert meta["videos"]["v/odd name"]["num_rows"] == 2
    for vid in ("vid", "v/odd name"):
        arr = np.load(b.path(vid), mmap_mode="r")  # plain .npy, readable without us
        assert arr.dtype == np.float16
        assert arr.shape == (b.num_rows(vid), C)
        assert not arr.any()
        assert b.path(vid).parent == tmp_path / "b" / "features"
        assert not b.is_complete(vid)
    with pytest.raises(BankError, match="already holds"):
        MemoryBank.create(tmp_path / "b", {"vid": 10}, C)
    with pytest.raises(BankError, match="num_frames"):
        MemoryBank.create(tmp_path / "c", {"vid": 0}, C)
    with pytest.raises(BankError, match="dtype"):
        MemoryBank.create(tmp_path / "d", {"vid": 4}, C, dtype="bfloat16")


def test_round_trip_inside(bank: MemoryBank) -> None:
    x = _features(241)
    bank.write("long", 0, x)
    np.testing.assert_array_equal(bank.read("long", 0, 241), x)
    np.testing.assert_array_equal(bank.read("long", 100, 16), x[100:116])
    assert bank.read("long", 5, 0).shape == (0, C)
    assert bank.read("long", 0, 4, dtype="float16").dtype == np.float16
    # a torch tensor is accepted as well
    bank.write("long", 10, torch.ones(3, C))
    np.testing.assert_array_equal(bank.read("long", 9, 5)[1:4], np.ones((3, C)))
    np.testing.assert_array_equal(bank.read("long", 9, 5)[[0, 4]], x[[9, 13]])
    # bf16 output of autocast, still attached to the graph: detached and widened
    t = torch.full((2, C), 0.5, dtype=torch.bfloat16, requires_grad=True) * 3
    bank.write("long", 20, t)
    np.testing.assert_array_equal(bank.read("long", 20, 2), np.full((2, C), 1.5))
    bank.write_chunks("long", 0, [1], torch.full((1, C, 16), 2.0, requires_grad=True))
    np.testing.assert_array_equal(bank.read("long", 16, 16), np.full((16, C), 2.0))


@pytest.mark.parametrize(
    ("start", "n"),
    [(-10, 16), (-30, 16), (230, 16), (241, 8), (300, 5), (-5, 260), (-1, 243)],
    ids=["before-start", "all-before", "past-end", "at-end", "far-past", "both-ends", "both-ends-1"],
)
def test_edges_read_zero_and_are_not_written(bank: MemoryBank, start: int, n: int) -> None:
    total = 241
    base = _features(total, seed=1)
    bank.write("long", 0, base)
    window = _features(n, seed=2)
    bank.write("long", start, window)  # the rows outside the video are dropped
    lo, hi = max(start, 0), min(start + n, total)
    expected_file = base.copy()
    if hi > lo:
        expected_file[lo:hi] = window[lo - start:hi - start]
    np.testing.assert_array_equal(np.load(bank.path("long")), expected_file)
    got = bank.read("long", start, n)
    assert got.shape == (n, C)
    inside = np.zeros(n, dtype=bool)
    inside[max(lo - start, 0):max(hi - start, 0)] = True
    np.testing.assert_array_equal(got[inside], window[inside])
    assert not got[~inside].any()
    # the neighbours of the written range are untouched
    np.testing.assert_array_equal(np.load(bank.path("short")), np.zeros((20, C), np.float32))


def test_fp16_tolerance(tmp_path: Path) -> None:
    b = MemoryBank.create(tmp_path / "b", {"v": 64}, 1024)
    assert b.dtype == "float16"
    x = _features(32, seed=3, c=1024) * 3
    b.write("v", 0, x)
    got = b.read("v", 0, 32)
    assert got.dtype == np.float16
    # fp16 has a 10-bit mantissa: relative error <= 2^-11 for normal numbers
    np.testing.assert_allclose(got.astype(np.float32), x, rtol=2.0**-11, atol=1e-4)
    assert np.abs(got.astype(np.float32) - x).max() > 0  # it really is rounded
    assert os.path.getsize(b.path("v")) < 32 * 1024 * 4  # half of fp32 on disk


def test_chunks_round_trip_and_layout(bank: MemoryBank) -> None:
    x = _features(241, seed=4)
    bank.write("long", 0, x)
    ids = [0, 1, 2, 5, 7, 8, 14]
    assert chunk_runs(ids) == [(0, 0, 3), (3, 5, 1), (4, 7, 2), (6, 14, 1)]
    got = bank.read_chunks("long", 10, ids, 16)
    assert got.shape == (7, C, 16)
    for pos, c in enumerate(ids):  # chunk c = rows offset + 16c .. +16, transposed to [C, 16]
        rows = np.zeros((16, C), np.float32)
        src = x[10 + 16 * c:10 + 16 * c + 16]
        rows[:len(src)] = src  # chunk 14 reaches rows 234..249: the last 9 are past the end
        np.testing.assert_array_equal(got[pos], rows.T)
    # a window hanging over the start: the rows before 0 read as zeros
    early = bank.read_chunks("long", -20, [0, 1, 2], 16, dtype="float16")
    assert early.dtype == np.float16
    expected = np.concatenate([np.zeros((20, C), np.float32), x[:28]]).reshape(3, 16, C)
    np.testing.assert_array_equal(early, expected.transpose(0, 2, 1).astype(np.float16))
    assert bank.read_chunks("long", 0, [], 16).shape == (0, C, 16)
    assert bank.read_chunks("long", 0, [3]).shape == (1, C, 16)  # rows_per_chunk from meta
    with pytest.raises(BankError, match="ascending"):
        bank.read_chunks("long", 0, [3, 1], 16)
    # write_chunks is the inverse and only touches its chunks' rows
    new = np.random.default_rng(5).standard_normal((3, C, 16)).astype(np.float32)
    bank.write_chunks("long", 2, [1, 2, 14], new)
    after = np.load(bank.path("long"))
    np.testing.assert_array_equal(after[18:50], np.concatenate([new[0].T, new[1].T]))
    np.testing.assert_array_equal(after[226:241], new[2].T[:15])  # row 241.. dropped
    np.testing.assert_array_equal(after[:18], x[:18])
    np.testing.assert_array_equal(after[50:226], x[50:226])
    np.testing.assert_array_equal(bank.read_chunks("long", 2, [1, 2], 16), new[:2])


def test_read_only_and_bad_input(bank: MemoryBank) -> None:
    ro = MemoryBank.open(bank.root, "r")
    with pytest.raises(BankError, match="read-only"):
        ro.write("long", 0, _features(2))
    with pytest.raises(BankError, match=r"'nope' is not in the memory bank"):
        bank.read("nope", 0, 2)
    with pytest.raises(BankError, match=r"\[n, 16\]"):
        bank.write("long", 0, np.zeros((4, 8), np.float32))
    with pytest.raises(BankError, match=r"meta\.json not found"):
        MemoryBank.open(bank.root / "features")


def test_open_sees_writes_and_flush(bank: MemoryBank) -> None:
    x = _features(20, seed=6)
    bank.write("short", 0, x)
    reader = MemoryBank.open(bank.root, "r")
    np.testing.assert_array_equal(reader.read("short", 0, 20), x)  # shared page cache
    bank.write("short", 0, x + 1)  # the reader's map stays open and sees the new rows
    np.testing.assert_array_equal(reader.read("short", 0, 20), x + 1)
    bank.flush()
    np.testing.assert_array_equal(np.load(bank.path("short")), x + 1)


def test_lru_limits_open_maps(tmp_path: Path) -> None:
    videos = {f"v{i}": 8 for i in range(6)}
    b = MemoryBank.create(tmp_path / "b", videos, C, dtype="float32", max_open=2)
    for i in range(6):
        b.write(f"v{i}", 0, np.full((4, C), i, np.float32))
    assert len(b._cache) == 2
    for i in range(6):  # evicted maps were not lost
        assert np.all(b.read(f"v{i}", 0, 4) == i)


def test_validate(tmp_path: Path) -> None:
    b = MemoryBank.create(tmp_path / "b", {"a": 100, "b": 33}, C)
    with pytest.raises(BankError, match="'a': rows not all written"):
        b.validate({"a": 100}, C, "float16")
    b.mark_complete("a")
    b.mark_complete("b")
    b.validate({"a": 100, "b": 33}, C, "float16")  # passes
    b.validate({"a": 100})  # dim/dtype checks are optional
    with pytest.raises(BankError, match=r"1 training video\(s\) missing: 'c'") as e:
        b.validate({"a": 100, "c": 10}, C, "float16")
    assert "tallformer bank build" in str(e.value)
    with pytest.raises(BankError, match=r"'b': bank has 33 frames / 17 rows, the video has 40 "
                                        r"frames -> 20 rows"):
        b.validate({"b": 40}, C, "float16")
    with pytest.raises(BankError, match="feature dim is 16 but the model's backbone gives 768"):
        b.validate({"a": 100}, 768, "float16")
    with pytest.raises(BankError, match="dtype is float16 but the config asks for float32"):
        b.validate({"a": 100}, C, "float32")
    with pytest.raises(BankError, match=r"fps is 15 but the config decodes at 30 \(data.fps\)"):
        b.validate({"a": 100}, fps=30.0)
    b.validate({"a": 100}, fps=15)
    assert b.stats() == {"videos": 2, "complete": 2, "rows": 67, "bytes": 67 * C * 2}
    # a file that does not match its meta entry
    np.save(b.path("a"), np.zeros((50, C + 1), np.float16))
    with pytest.raises(BankError, match=r"'a': .* holds float16 \[50, 17\]"):
        MemoryBank.open(b.root).validate({"a": 100}, C, "float16")
    b.path("b").unlink()
    with pytest.raises(BankError, match="'b': cannot read"):
        MemoryBank.open(b.root).validate({"b": 33})


def test_open_rejects_bad_meta(tmp_path: Path) -> None:
    b = MemoryBank.create(tmp_path / "b", {"a": 10}, C)
    meta = json.loads((b.root / "meta.json").read_text())
    meta["videos"]["a"]["num_rows"] = "5"
    (b.root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BankError, match=r"meta.json: videos\['a'\]\['num_rows'\]"):
        MemoryBank.open(b.root)
    (b.root / "meta.json").write_text("{not json")
    with pytest.raises(BankError, match="cannot read bank meta"):
        MemoryBank.open(b.root)


def test_complete_flags_and_resume(tmp_path: Path) -> None:
    root = tmp_path / "b"
    b = MemoryBank.create(root, {"a": 64, "b": 64}, C, dtype="float32")
    b.write("a", 0, np.ones((32, C), np.float32))
    b.mark_complete("a")
    b.write("b", 0, np.ones((10, C), np.float32))  # interrupted half-way: never marked
    again = MemoryBank.open(root, "r+")
    assert again.is_complete("a")
    assert not again.is_complete("b")
    # resume: same settings, a new video and a changed frame count
    with pytest.raises(BankError, match=r"feature_dim: 16 -> 8; bank -> asked for\)"):
        MemoryBank.create(root, {"a": 64}, 8, dtype="float32", exist_ok=True)
    # a video whose frame count changed is another video: refused, named, unless overwrite
    with pytest.raises(BankError, match=r"1 video\(s\) .* b \(64 -> 66 frames\); .*overwrite"):
        MemoryBank.create(root, {"a": 64, "b": 66, "c": 5}, C, dtype="float32", exist_ok=True)
    assert MemoryBank.open(root).videos == ["a", "b"]  # the refused call changed nothing
    resumed = MemoryBank.create(root, {"a": 64, "b": 66, "c": 5}, C, dtype="float32",
                                exist_ok=True, overwrite=True)
    assert resumed.is_complete("a")
    assert not resumed.is_complete("b")
    assert np.all(resumed.read("a", 0, 32) == 1)  # finished rows kept
    assert resumed.num_rows("b") == 33
    assert not resumed.read("b", 0, 33).any()
    assert resumed.num_rows("c") == 3
    # a damaged file (e.g. truncated by a crash) is recreated on resume, even if marked done
    np.save(resumed.path("a"), np.zeros((3, C), np.float32))
    resumed = MemoryBank.create(root, {"a": 64}, C, dtype="float32", exist_ok=True)
    assert not resumed.is_complete("a")
    assert resumed.read("a", 0, 32).shape == (32, C)
    resumed.mark_complete("a")
    # two processes marking their own videos keep each other's flags
    other = MemoryBank.open(root, "r+")
    resumed.mark_complete("b")
    other.mark_complete("c")
    final = MemoryBank.open(root)
    assert final.is_complete("a")
    assert final.is_complete("b")
    assert final.is_complete("c")


def test_fingerprint_and_copy(tmp_path: Path) -> None:
    src = MemoryBank.create(tmp_path / "src", {"a": 40, "b": 9}, C, dtype="float32",
                            backbone={"arch": "tiny"}, weights="w.pth")
    x = _features(20, seed=7)
    src.write("a", 0, x)
    src.mark_complete("a")
    fp = src.fingerprint()
    assert fp == MemoryBank.open(src.root).fingerprint()
    assert len(fp) == 64
    src.write("a", 0, x + 1)  # row contents are not part of the fingerprint
    assert src.fingerprint() == fp
    src.mark_complete("b")
    fp = src.fingerprint()
    assert fp != MemoryBank.create(tmp_path / "o", {"a": 40, "b": 9}, C, dtype="float32",
                                   weights="other.pth").fingerprint()

    run = tmp_path / "run" / "bank"
    dst = src.copy_to(run, progress=False)
    assert dst.root == run
    assert dst.mode == "r+"
    assert dst.fingerprint() == fp
    np.testing.assert_array_equal(dst.read("a", 0, 20), x + 1)  # unflushed writes copied
    assert [p.name for p in run.parent.iterdir()] == ["bank"]  # no temp folder left behind
    dst.write("a", 0, x * 0)  # training edits the copy, never the source
    np.testing.assert_array_equal(src.read("a", 0, 20), x + 1)
    # resume: the copy with the same fingerprint is reused as it is (rows kept)
    again = src.copy_to(run, progress=False)
    assert not again.read("a", 0, 20).any()
    # a different bank at the destination is an error, not silently replaced
    other = MemoryBank.create(tmp_path / "other", {"z": 4}, C)
    with pytest.raises(BankError, match="different memory bank"):
        other.copy_to(run, progress=False)
    with pytest.raises(BankError, match="onto itself"):
        src.copy_to(src.root)
    # a shard for one node: only its videos, its own fingerprint
    shard = src.copy_to(tmp_path / "shard", videos=["a"], mode="r", progress=False)
    assert shard.videos == ["a"]
    assert shard.fingerprint() != fp
    assert sorted(p.name for p in (tmp_path / "shard" / "features").iterdir()) == ["a.npy"]
    np.testing.assert_array_equal(shard.read("a", 0, 20), x + 1)
    assert src.copy_to(tmp_path / "shard", videos=["a"], progress=False).fingerprint() == \
        shard.fingerprint()
    with pytest.raises(BankError, match="'zz' is not in the memory bank"):
        src.copy_to(tmp_path / "shard2", videos=["zz"])


def test_pickle_drops_open_maps(bank: MemoryBank) -> None:
    bank.write("short", 0, np.full((20, C), 3.0, np.float32))
    assert bank._cache
    clone = pickle.loads(pickle.dumps(bank))
    assert not clone._cache
    assert np.all(clone.read("short", 0, 20) == 3.0)


def _child_writes(bank: MemoryBank, queue: mp.Queue) -> None:  # runs in a forked child
    try:
        reopened = not bank._cache or bank._pid != os.getpid()
        before = bank.read("long", 0, 4)  # the parent's rows, through the child's own map
        bank.write("long", 100, np.full((16, C), 7.0, np.float32))
        bank.flush()
        queue.put((reopened, bank._pid == os.getpid(), float(before.sum())))
    except Exception as e:  # pragma: no cover - surfaced by the assert in the parent
        queue.put(repr(e))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_fork_child_writes_parent_reads(bank: MemoryBank) -> None:
    bank.write("long", 0, np.ones((4, C), np.float32))
    assert not bank.read("long", 100, 16).any()  # parent's map is now open and cached
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_writes, args=(bank, queue))
    proc.start()
    result = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert result == (True, True, 4.0 * C), result
    np.testing.assert_array_equal(bank.read("long", 100, 16), np.full((16, C), 7.0))
    assert bank._pid == os.getpid()


def test_resume_with_a_backbone_config_holding_tuples(tmp_path: Path) -> None:
    """The backbone config is recorded as JSON: a dataclass or dict with tuples (e.g. the
    backbone's SwinArch, depths (2, 2, 6, 2)) must match its own meta.json on resume."""
    from tallformer.models.backbone import PRESETS

    arch = PRESETS["swin_t"]
    b = MemoryBank.create(tmp_path / "b", {"a": 8}, C, backbone=arch)
    assert b.backbone == MemoryBank.open(tmp_path / "b").backbone  # lists, as on disk
    again = MemoryBank.create(tmp_path / "b", {"a": 8, "x": 4}, C, backbone=arch, exist_ok=True)
    assert again.backbone["depths"] == [2, 2, 6, 2]
    assert again.videos == ["a", "x"]
    with pytest.raises(BankError, match=r"backbone\.depths: \[2, 2, 6, 2\] -> \[2, 2\]"):
        MemoryBank.create(tmp_path / "b", {"a": 8}, C, backbone={"depths": [2, 2]},
                          exist_ok=True)


def test_open_validates_when_given_the_training_videos(tmp_path):
    bank = MemoryBank.create(tmp_path / "b", {"a": 10}, 4)
    bank.mark_complete("a")
    assert MemoryBank.open(tmp_path / "b", videos={"a": 10}, feature_dim=4, dtype="float16").num_rows("a") == 5
    with pytest.raises(BankError, match=r"'a'.*10 frames.*12 frames"):
        MemoryBank.open(tmp_path / "b", videos={"a": 12})
    with pytest.raises(BankError, match="missing"):
        MemoryBank.open(tmp_path / "b", videos={"a": 10, "z": 3})


def test_meta_file_format(tmp_path: Path) -> None:
    """meta.json: indent 1, sorted keys, ASCII escapes, a trailing newline (unchanged bytes)."""
    b = MemoryBank.create(tmp_path / "b", {"vidé": 3}, C, weights="w.pth")
    text = (b.root / "meta.json").read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"
    assert "vid\\u00e9" in text
    assert sorted(p.name for p in b.root.iterdir()) == ["features", "meta.json"]  # no temp file


def test_settings_mismatch_names_only_the_keys_that_differ(tmp_path: Path) -> None:
    backbone = {"arch": "tiny", "drop_path_rate": 0.1, "weights": "pretrained/x.pth"}
    MemoryBank.create(tmp_path / "b", {"a": 8}, C, backbone=backbone, weights="pretrained/x.pth")
    with pytest.raises(BankError) as e:
        MemoryBank.create(tmp_path / "b", {"a": 8}, C, dtype="float32", exist_ok=True,
                          backbone=dict(backbone, drop_path_rate=0.2, depths=[2]),
                          weights="pretrained/x.pth")
    message = str(e.value)
    assert ("(dtype: 'float16' -> 'float32'; backbone.drop_path_rate: 0.1 -> 0.2; "
            "backbone.depths: (unset) -> [2]; bank -> asked for)") in message
    assert "arch" not in message  # keys that agree are not printed
    assert "\n" not in message


def test_weights_paths_are_compared_as_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = "./pretrained/x.pth"
    absolute = str(tmp_path / "pretrained" / "x.pth")
    MemoryBank.create("b", {"a": 8}, C, backbone={"weights": rel}, weights=rel)
    again = MemoryBank.create("b", {"a": 8, "z": 2}, C, backbone={"weights": absolute},
                              weights=absolute, exist_ok=True)
    assert again.videos == ["a", "z"]
    assert again.weights == rel  # recorded as first given: the meta is not rewritten
    with pytest.raises(BankError, match=r"weights: './pretrained/x.pth' -> 'other.pth'"):
        MemoryBank.create("b", {"a": 8}, C, backbone={"weights": rel}, weights="other.pth",
                          exist_ok=True)


def test_videos_from_other_source_files_are_refused(tmp_path: Path) -> None:
    """Another dataset's videos with the same ids (other files) are not mixed into a bank."""
    root = tmp_path / "b"
    src = {"a": {"name": "a.mp4", "bytes": 100}, "b": {"name": "b.mp4", "bytes": 200}}
    bank = MemoryBank.create(root, {"a": 8, "b": 8}, C, dtype="float32", sources=src)
    bank.write("a", 0, np.ones((4, C), np.float32))
    bank.mark_complete("a")
    bank.mark_complete("b")
    assert MemoryBank.open(root).meta["videos"]["a"]["source"] == {"name": "a.mp4", "bytes": 100}
    # the same files again (a resume): kept as they are
    same = MemoryBank.create(root, {"a": 8, "b": 8}, C, dtype="float32", sources=src, exist_ok=True)
    assert same.is_complete("a")
    assert np.all(same.read("a", 0, 4) == 1)
    other = {"a": {"name": "a.mp4", "bytes": 999}, "b": {"name": "b.mkv", "bytes": 200}}
    with pytest.raises(BankError) as e:
        MemoryBank.create(root, {"a": 8, "b": 8}, C, dtype="float32", sources=other, exist_ok=True)
    assert str(e.value) == (
        f"{root}: 2 video(s) in this bank were built from other files than the ones given now "
        "(another dataset with the same ids, or changed videos): a (source.bytes: 100 -> 999), "
        "b (source.name: 'b.mp4' -> 'b.mkv'); build into another folder, or rebuild these "
        "videos with overwrite=True (`tallformer bank build --overwrite`)"
    )
    assert MemoryBank.open(root).is_complete("a")  # untouched
    rebuilt = MemoryBank.create(root, {"a": 8, "b": 8}, C, dtype="float32", sources=other,
                                exist_ok=True, overwrite=True)
    assert not rebuilt.is_complete("a")
    assert not rebuilt.is_complete("b")
    assert not rebuilt.read("a", 0, 4).any()  # fresh zeros
    assert rebuilt.meta["videos"]["b"]["source"] == {"name": "b.mkv", "bytes": 200}
    assert rebuilt.path("a") == bank.path("a")  # same file name
    # a bank entry without a recorded source is checked by its frame count only
    plain = MemoryBank.create(tmp_path / "p", {"a": 8}, C)
    plain.mark_complete("a")
    kept = MemoryBank.create(tmp_path / "p", {"a": 8}, C, sources=other, exist_ok=True)
    assert kept.is_complete("a")
    assert "source" not in kept.meta["videos"]["a"]


def test_summary(tmp_path: Path) -> None:
    b = MemoryBank.create(tmp_path / "b", {"a": 40, "b": 9}, C, dtype="float32",
                          backbone={"arch": "tiny"}, weights="w.pth")
    b.mark_complete("a")
    b.path("b").unlink()
    info = b.summary()
    files = b.path("a").stat().st_size + (tmp_path / "b" / "meta.json").stat().st_size
    assert info == {
        "path": str(tmp_path / "b"), "videos": 2, "complete": 1, "incomplete": ["b"],
        "missing_files": ["b"], "rows": 25, "frames": 49, "feature_dim": C, "dtype": "float32",
        "frames_per_row": 2, "chunk_size": 32, "fps": 15.0, "backbone": {"arch": "tiny"},
        "weights": "w.pth", "feature_bytes": 25 * C * 4, "disk_bytes": files,
        "fingerprint": b.fingerprint(),
    }
    assert json.loads(json.dumps(info)) == info
