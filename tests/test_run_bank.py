"""The run's own copy of the bank: validated, copied once, reused on resume, recorded."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tallformer.config import load_config
from tallformer.engine.run_bank import open_training_bank
from tallformer.engine.run_layout import BANK_RECORD
from tallformer.errors import TallformerWarning
from tallformer.memory.bank import BankError, MemoryBank

FRAMES = {"a": 70, "b": 33}


def make_bank(root, frames=FRAMES, dim=8, weights=None):
    bank = MemoryBank.create(root, frames, dim, weights=weights)
    for i, v in enumerate(frames):
        bank.write(v, 0, np.full((bank.num_rows(v), dim), i + 1, dtype=np.float16))
        bank.mark_complete(v)
    bank.flush()
    return bank


def cfg_for(bank_dir, *extra):
    return load_config(None, [f"memory.bank_dir={bank_dir}", *extra])


def test_copy_is_made_once_recorded_and_reused(tmp_path):
    make_bank(tmp_path / "src")
    run = tmp_path / "run"
    bank = open_training_bank(cfg_for(tmp_path / "src"), run, FRAMES, feature_dim=8)
    assert bank.path("a").is_relative_to(run)
    text = (run / BANK_RECORD).read_text()
    record = json.loads(text)
    assert text == json.dumps(record, indent=2)  # the record's bytes: indent 2, no newline
    assert record == {"source": str((tmp_path / "src").resolve()),
                      "fingerprint": MemoryBank.open(tmp_path / "src").fingerprint(),
                      "in_place": False, "path": str((run / "bank").resolve())}
    assert sorted(p.name for p in run.iterdir()) == ["bank", "bank.json"]  # no temp files
    bank.write("a", 0, np.zeros((2, 8), dtype=np.float16))
    bank.flush()
    # the user's bank is untouched
    assert float(MemoryBank.open(tmp_path / "src").read("a", 0, 1)[0, 0]) == 1.0
    # resuming reuses the copy, with the training writes it holds
    again = open_training_bank(cfg_for(tmp_path / "src"), run, FRAMES, feature_dim=8)
    assert float(again.read("a", 0, 1)[0, 0]) == 0.0
    assert float(again.read("a", 2, 1)[0, 0]) == 1.0


def test_in_place_trains_on_the_users_bank(tmp_path):
    make_bank(tmp_path / "src")
    bank = open_training_bank(cfg_for(tmp_path / "src", "memory.in_place=true"), tmp_path / "run", FRAMES, 8)
    bank.write("b", 0, np.zeros((1, 8), dtype=np.float16))
    bank.flush()
    assert float(MemoryBank.open(tmp_path / "src").read("b", 0, 1)[0, 0]) == 0.0
    assert not (tmp_path / "run" / "bank").exists()


def test_mismatches_are_named(tmp_path):
    make_bank(tmp_path / "src")
    with pytest.raises(BankError, match=r"missing: 'c'"):
        open_training_bank(cfg_for(tmp_path / "src"), tmp_path / "run", {**FRAMES, "c": 10}, 8)
    with pytest.raises(BankError, match=r"'a'.*70 frames.*71 frames"):
        open_training_bank(cfg_for(tmp_path / "src"), tmp_path / "run", {**FRAMES, "a": 71}, 8)
    with pytest.raises(BankError, match="feature dim is 8 but the model's backbone gives 16"):
        open_training_bank(cfg_for(tmp_path / "src"), tmp_path / "run", FRAMES, 16)
    with pytest.raises(BankError, match=r"memory\.dtype"):
        open_training_bank(cfg_for(tmp_path / "src", "memory.dtype=float32"), tmp_path / "run", FRAMES, 8)
    with pytest.raises(BankError, match=r"memory\.bank_dir is not set"):
        open_training_bank(load_config(), tmp_path / "run", FRAMES, 8)


def test_resume_with_another_bank_is_refused(tmp_path):
    make_bank(tmp_path / "src")
    make_bank(tmp_path / "other", dim=8, frames={"a": 70, "b": 33, "c": 5})
    open_training_bank(cfg_for(tmp_path / "src"), tmp_path / "run", FRAMES, 8)
    with pytest.raises(BankError, match="resume with the same bank"):
        open_training_bank(cfg_for(tmp_path / "other"), tmp_path / "run", FRAMES, 8)


def test_bank_from_other_weights_is_warned(tmp_path):
    make_bank(tmp_path / "src", weights="pretrained/swin_b.pth")
    with pytest.warns(TallformerWarning, match=r"built from backbone weights pretrained/swin_b\.pth but model\.backbone\.weights is None"):
        open_training_bank(cfg_for(tmp_path / "src"), tmp_path / "run", FRAMES, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_training_bank(cfg_for(tmp_path / "src", "model.backbone.weights=pretrained/swin_b.pth"),
                           tmp_path / "run2", FRAMES, 8)
    # the same file spelled another way (relative / absolute) is the same weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        absolute = str(Path("pretrained/swin_b.pth").resolve())
        open_training_bank(cfg_for(tmp_path / "src", f"model.backbone.weights={absolute}"),
                           tmp_path / "run3", FRAMES, 8)


def test_unreadable_run_record_is_named(tmp_path):
    make_bank(tmp_path / "src")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / BANK_RECORD).write_text("{oops")
    with pytest.raises(BankError, match=r"bank\.json: cannot read this run's bank record"):
        open_training_bank(cfg_for(tmp_path / "src"), tmp_path / "run", FRAMES, 8)
