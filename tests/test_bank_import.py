"""`tallformer bank import` (`tallformer.engine.bank_import`): the original release's bank
folder (raw float32 `<video>.mmap` files, shapes only in `meta_val.json` beside `val/`;
original: tools/data/extract_features.py:84,176-193) into ours, validated against the meta,
the config and the annotations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import tallformer.engine.bank_import as bank_import
from tallformer.cli import main
from tallformer.config import load_config
from tallformer.memory.bank import MemoryBank

DIM = 192  # the tiny backbone's features
OVERRIDES = ["model.backbone.arch=tiny"]


def _original_bank(root: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """An original THUMOS14-style bank and the annotations of its videos."""
    rng = np.random.default_rng(0)
    val = root / "feat_swinb_15fps_256x256_crop224x224" / "val"
    val.mkdir(parents=True)
    frames = {"video_validation_1": 100, "video_validation_2": 61, "video_validation_3": 61,
              "video_validation_4": 90, "video_validation_5": 40, "video_validation_9": 30}
    meta: dict[str, dict[str, object]] = {}
    rows: dict[str, np.ndarray] = {}
    for vid, n in frames.items():
        r = math.ceil(n / 2)
        if vid == "video_validation_4":
            continue  # in the annotations, not in the bank
        data = rng.standard_normal((r, DIM)).astype("<f4")
        rows[vid] = data
        if vid == "video_validation_5":
            data = data[:-3]  # a truncated file
        mm = np.memmap(val / f"{vid}.mmap", dtype="<f4", mode="w+", shape=data.shape)
        mm[:] = data
        mm.flush()
        del mm
        meta[vid] = {"num_frames": n, "feat_shape": [r, DIM]}
    meta["video_validation_3"]["feat_shape"] = [40, DIM]  # a shape that does not fit its frames
    (val.parent / "meta_val.json").write_text(json.dumps(meta))
    database = {vid: {"subset": "validation", "duration": n / 15.0, "annotations": []}
                for vid, n in frames.items() if vid != "video_validation_9"}
    database["video_test_1"] = {"subset": "test", "duration": 10.0, "annotations": []}
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"database": database}))
    return val, ann, rows


def test_import_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    val, ann, rows = _original_bank(tmp_path)
    out = tmp_path / "bank"
    code = main(["bank", "import", str(val), "--out", str(out), "--config", "thumos14_swin_b", "--no-progress",
                 *OVERRIDES, f"data.annotations={ann}"])
    captured = capsys.readouterr()
    assert code == 1  # three training videos do not fit
    assert "2 imported" in captured.out
    assert "feat_shape rows != ceil(num_frames / 2) (1): video_validation_3" in captured.err
    assert "training videos missing from meta_val.json (1): video_validation_4" in captured.err
    assert "file size != rows x dim x 4 bytes (float32 feat_shape of the meta) (1): video_validation_5" in captured.err
    assert "not in the training subset, left out (1): video_validation_9" in captured.out
    bank = MemoryBank.open(out)
    assert sorted(bank.videos) == ["video_validation_1", "video_validation_2"]
    assert bank.dtype == "float16"
    for vid in bank.videos:
        assert bank.is_complete(vid)
        assert bank.num_frames(vid) == {"video_validation_1": 100, "video_validation_2": 61}[vid]
        np.testing.assert_array_equal(bank.read(vid, 0, bank.num_rows(vid)), rows[vid].astype(np.float16))
    source = bank.meta["videos"]["video_validation_1"]["source"]
    assert source["name"] == "video_validation_1.mmap"
    assert source["imported_from"] == str(val.resolve())

    # fp32: the rows bit for bit; a re-run resumes (finished videos are skipped)
    out32 = tmp_path / "bank32"
    args = ["bank", "import", str(val), "--out", str(out32), "--config", "thumos14_swin_b", "--no-progress",
            "--dtype", "float32", *OVERRIDES, f"data.annotations={ann}"]
    assert main(args) == 1
    assert main(args) == 1
    assert "0 imported, 2 already there" in capsys.readouterr().out
    bank32 = MemoryBank.open(out32)
    np.testing.assert_array_equal(bank32.read("video_validation_2", 0, 31), rows["video_validation_2"])


def test_a_failing_video_keeps_the_finished_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    val, ann, _ = _original_bank(tmp_path)
    cfg = load_config("thumos14_swin_b", [*OVERRIDES, f"data.annotations={ann}"])
    real = bank_import._copy_video

    def flaky(bank: MemoryBank, path: Path, vid: str, *args: object) -> None:
        if vid == "video_validation_2":
            raise OSError("disk went away")
        real(bank, path, vid, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(bank_import, "_copy_video", flaky)
    report = bank_import.import_bank(cfg, val, tmp_path / "bank", progress=False)
    assert report.imported == ["video_validation_1"]
    assert report.failed == {"video_validation_2": "disk went away"}
    monkeypatch.setattr(bank_import, "_copy_video", real)
    again = bank_import.import_bank(cfg, val, tmp_path / "bank", progress=False)
    assert again.skipped == ["video_validation_1"]
    assert again.imported == ["video_validation_2"]
    bank = MemoryBank.open(tmp_path / "bank")
    assert all(bank.is_complete(v) for v in bank.videos)


def test_import_errors_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    val, ann, _ = _original_bank(tmp_path)
    (val.parent / "meta_val.json").unlink()
    assert main(["bank", "import", str(val), "--out", str(tmp_path / "b"), "--config", "thumos14_swin_b",
                 *OVERRIDES, f"data.annotations={ann}"]) == 2
    err = capsys.readouterr().err
    assert "no meta*.json" in err
    assert "--meta FILE" in err
    # a Swin-B config for a tiny bank: nothing fits, nothing written
    _, ann2, _ = _original_bank(tmp_path / "again")
    val2 = tmp_path / "again" / "feat_swinb_15fps_256x256_crop224x224" / "val"
    assert main(["bank", "import", str(val2), "--out", str(tmp_path / "c"), "--config", "thumos14_swin_b",
                 f"data.annotations={ann2}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no video of the original bank fits" in err
    assert "is not the config's backbone's 1024" in err
    assert "\n" not in err
    assert not (tmp_path / "c").exists()
