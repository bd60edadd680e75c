"""End to end on a tiny ActivityNet-style run (``anet_demo``, model.kind afsd): synthetic
videos re-encoded to at most 128 frames (`tallformer prepare videos --num-frames`), a
training stopped by ``train.max_steps`` and resumed, `tallformer test` with the builtin,
gt and FILE classifiers under both protocols, `tallformer eval` on its results and
`tallformer detect` on a raw video. Smoke, not accuracy."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from helpers import run_cli
from tallformer.cli import main


def _cli(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, out.getvalue()[-2000:]
    return out.getvalue()


def _train(args: list[str]) -> str:
    proc = run_cli(["train", "--config", "anet_demo", *args, "data.num_workers=0", "train.checkpoint_steps=1",
                    "train.log_interval=1", "--no-progress"])  # in this process: no start-up
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def anet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tallformer.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("anet_e2e")
    raw = generate_synthetic_dataset(root / "syn", 6, seed=3, min_length=8, max_length=10,
                                     val_fraction=0.34, progress=False)
    videos = root / "videos"  # 120-150 frames at 15 fps -> at most 128 frames each
    _cli(["prepare", "videos", "--videos", str(root / "syn" / "videos"), "--out", str(videos),
          "--size", "64x64", "--num-frames", "128"])
    meta = json.loads((videos / "meta.json").read_text())["videos"]
    data = json.loads(raw.read_text())
    for vid, entry in data["database"].items():
        # each re-encoded video's own fps: the rate training decodes it at and converts its
        # seconds with (tallformer.data.annotations.video_fps)
        entry["fps"] = meta[vid]["fps"]
    ann = root / "annotations.json"
    ann.write_text(json.dumps(data))
    val = sorted(v for v, e in data["database"].items() if e["subset"] == "validation")
    classes = sorted({a["label"] for e in data["database"].values() for a in e["annotations"]})
    clf = root / "cuhk_style.json"  # a classifier file in the CUHK format, ids with "v_"
    clf.write_text(json.dumps({"class": classes, "results": {
        f"v_{v}": [1.0 if c == data["database"][v]["annotations"][0]["label"] else 0.1 for c in classes]
        for v in val}}))
    listed = root / "video_info_new.csv"  # BSN's format: the first validation video only
    listed.write_text(f"video,numFrame,seconds,fps,rfps,subset,featureFrame\n"
                      f"v_{val[0]},128,9.0,15,15,validation,128\n")
    run = root / "run"
    common = [f"data.annotations={ann}", f"data.videos={videos}", f"run_dir={run}"]
    first = _train([*common, "train.max_steps=1"])
    second = _train([*common, "train.max_steps=2"])
    return {"root": root, "raw": root / "syn" / "videos", "videos": videos, "ann": ann, "clf": clf,
            "list": listed, "run": run, "val": val, "first": first, "second": second}  # type: ignore[dict-item]


@pytest.mark.slow
def test_training_stops_and_resumes(anet: dict) -> None:
    assert "resuming" not in anet["first"]
    assert "epoch 0, step 0" in anet["first"]
    assert "resuming" in anet["second"]
    assert "step 1," in anet["second"]
    steps = [json.loads(x)["step"] for x in (anet["run"] / "log.jsonl").read_text().splitlines()
             if '"loss"' in x]
    assert steps == [1, 2]
    assert (anet["run"] / "checkpoints" / "step_000002.pt").is_file()


@pytest.mark.slow
def test_test_three_classifiers_two_protocols_and_eval(anet: dict) -> None:
    out = anet["root"] / "test"
    printed = _cli(["test", "--config", "anet_demo", f"data.annotations={anet['ann']}",
                    f"data.videos={anet['videos']}", f"run_dir={anet['run']}",
                    "--checkpoint", str(anet["run"] / "checkpoints" / "last.pt"),
                    "--classifier", "builtin", "gt", str(anet["clf"]),
                    "--videos-list", str(anet["list"]), "--out", str(out), "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tiou_thresholds"][0] == 0.5
    assert len(summary["tiou_thresholds"]) == 10
    rows = {(r["classifier"], r["protocol"]): r for r in summary["checkpoints"]}
    assert set(rows) == {(c, p) for c in ("builtin", "gt", "cuhk_style") for p in ("all", "list")}
    assert rows[("builtin", "all")]["num_videos"] == 2
    assert rows[("builtin", "list")]["num_videos"] == 1
    assert rows[("gt", "all")]["oracle"]
    assert not rows[("cuhk_style", "all")]["oracle"]
    # the table names the oracle and states each protocol
    assert "gt (oracle)" in printed
    assert "an upper bound" in printed
    assert "protocol all: all 2 videos of subset 'validation'" in printed
    assert "protocol list: the videos of subset 'validation' listed in" in printed
    for name in ("builtin", "gt", "cuhk_style"):
        results = json.loads((out / "last" / name / "results.json").read_text())
        assert results["classifier"]["name"] == name
        assert list(results["results"]) == [anet["val"][0]]  # the listed video only
    # `tallformer eval` on a written results file gives the numbers of the table
    metrics = anet["root"] / "eval.json"
    _cli(["eval", "--gt", str(anet["ann"]), "--pred", str(out / "last" / "gt" / "results.json"),
          "--subset", "validation", "--ignore-unknown-labels", "--out", str(metrics)])
    assert json.loads(metrics.read_text())["mAP"] == rows[("gt", "all")]["mAP"]


@pytest.mark.slow
def test_detect_with_an_activitynet_checkpoint(anet: dict) -> None:
    video = anet["raw"] / f"{anet['val'][0]}.mp4"  # not re-encoded: resampled on the fly
    out = anet["root"] / "detect"
    printed = _cli(["detect", str(video), "--checkpoint", str(anet["run"] / "checkpoints" / "last.pt"),
                    "--out", str(out), "--top-k", "10", "--no-progress"])
    assert "detections" in printed
    data = json.loads((out / f"{anet['val'][0]}.json").read_text())
    assert data["video"]["num_frames"] == 128
    assert data["video"]["fps"] < 15.0
    dets = data["results"][anet["val"][0]]
    assert 0 < len(dets) <= 10
    assert all(0.0 <= d["segment"][0] < d["segment"][1] <= data["video"]["duration"] + 1e-6 for d in dets)
    assert (out / f"{anet['val'][0]}.html").is_file()
