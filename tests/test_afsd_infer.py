"""The ActivityNet test path (`tallformer.engine.families.afsd`): the clip, labelling and
clipping on hand-made cases, the video lists, and a whole subset through an untrained tiny
detector under the three classifiers and the two protocols (original:
AFSD/anet_video_cls/test.py:97-241, AFSD/anet_video_cls/eval.py:25-31)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import write_video
from tallformer.cli import main
from tallformer.config import load_config
from tallformer.data.annotations import load_annotations
from tallformer.data.transforms import test_transform
from tallformer.data.video import open_source
from tallformer.engine.errors import InferenceError
from tallformer.engine.factory import build_detector
from tallformer.engine.families.afsd import (
    ClassifierSpec,
    afsd_clip,
    decode_rate,
    evaluate_afsd,
    load_video_list,
    parse_classifier,
    unique_names,
)
from tallformer.engine.infer import infer_video
from tallformer.engine.results import Detection, results_json
from tallformer.evaluation import ANET_THRESHOLDS, evaluate
from tallformer.models.afsd import AFSD
from tallformer.models.afsd_fusion import ClassifierError, label_proposals
from tallformer.models.outputs import Detections

CLASSES = ["Archery", "Bowling", "Cheerleading", "Dodgeball"]


def test_clip_takes_the_first_frames_and_pads_black_before_normalising() -> None:
    cfg = load_config("anet_demo")  # 128 frames, 64x64 -> crop 56
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(40, 64, 64, 3), dtype=np.uint8)
    clip = afsd_clip(frames, cfg)
    assert clip.shape == (3, 128, 56, 56)
    torch.testing.assert_close(clip[:, :40], test_transform(frames, 56, cfg.data.mean, cfg.data.std))
    black = torch.tensor([-m / s for m, s in zip(cfg.data.mean, cfg.data.std, strict=True)])
    torch.testing.assert_close(clip[:, 40:], black[:, None, None, None].expand(3, 88, 56, 56))
    longer = rng.integers(0, 256, size=(130, 64, 64, 3), dtype=np.uint8)
    torch.testing.assert_close(afsd_clip(longer, cfg), afsd_clip(longer[:128], cfg))


def test_label_proposals_seconds_clip_fuse_and_sort() -> None:
    proposals = Detections(torch.tensor([[0.0, 30.0], [20.0, 200.0], [160.0, 170.0]]),
                           torch.tensor([0.9, 0.5, 0.8]), torch.zeros(3, dtype=torch.long))
    probs = torch.tensor([0.1, 0.2, 0.6, 0.1])  # background, then 3 actions
    # fps 10, duration 15 s: [0, 3], [2, 15] and [15, 15] (empty after clipping: dropped)
    out = label_proposals(proposals, 10.0, 15.0, "builtin", action_probs=probs)
    torch.testing.assert_close(out.segments, torch.tensor([[0.0, 3.0], [2.0, 15.0], [0.0, 3.0], [2.0, 15.0]]))
    torch.testing.assert_close(out.scores, torch.tensor([0.9 * 0.6, 0.5 * 0.6, 0.9 * 0.2, 0.5 * 0.2]))
    assert out.labels.tolist() == [1, 1, 0, 0]
    oracle = label_proposals(proposals, 10.0, 15.0, "gt", gt_label=2)
    assert oracle.labels.tolist() == [2, 2]
    torch.testing.assert_close(oracle.scores, torch.tensor([0.9, 0.5]))
    unclipped = label_proposals(proposals, 10.0, None, "gt", gt_label=0)
    assert unclipped.segments[:, 1].tolist() == pytest.approx([3.0, 17.0, 20.0])


def test_results_json_names_its_classifier_and_the_evaluator_reads_it() -> None:
    spec = ClassifierSpec("gt", "gt")
    data = results_json({"a": [Detection((1.0, 2.0), "Archery", 0.5)]}, spec.result_set())
    assert data["classifier"]["oracle"] is True
    assert data["classifier"]["kind"] == "gt"
    assert data["external_data"]["used"] is True
    assert "oracle" in data["external_data"]["details"]
    assert results_json({}, ClassifierSpec("builtin", "builtin").result_set())["external_data"]["used"] is False
    gt = {"database": {"a": {"subset": "validation", "annotations": [{"segment": [1.0, 2.0], "label": "Archery"}]}}}
    assert evaluate(gt, data, ANET_THRESHOLDS, "validation")["average_mAP"] == 1.0


def test_video_lists_csv_json_text(tmp_path: Path) -> None:
    csv_file = tmp_path / "video_info_new.csv"
    csv_file.write_text("video,numFrame,seconds,fps,rfps,subset,featureFrame\n"
                        "v_a,10,1.0,10,10,validation,8\nv_b,10,1.0,10,10,training,8\n")
    assert load_video_list(csv_file) == ["v_a", "v_b"]
    (tmp_path / "l.json").write_text('["a", "v_c"]')
    assert load_video_list(tmp_path / "l.json") == ["a", "v_c"]
    (tmp_path / "l.txt").write_text("# downloadable\na\n\nv_c\n")
    assert load_video_list(tmp_path / "l.txt") == ["a", "v_c"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InferenceError, match="lists no video"):
        load_video_list(tmp_path / "empty.txt")
    with pytest.raises(InferenceError, match="cannot read"):
        load_video_list(tmp_path / "missing.csv")


def test_classifier_arguments(tmp_path: Path) -> None:
    assert parse_classifier("builtin") == ClassifierSpec("builtin", "builtin")
    assert parse_classifier("gt").oracle
    assert parse_classifier("gt").title == "gt (oracle)"
    f = tmp_path / "cuhk_val.json"
    f.write_text("{}")
    assert parse_classifier(str(f)) == ClassifierSpec("file", "cuhk_val", str(f))
    with pytest.raises(InferenceError, match="neither builtin, gt nor"):
        parse_classifier(str(tmp_path / "nope.json"))
    names = [s.name for s in unique_names([parse_classifier(str(f)), parse_classifier(str(f)),
                                           parse_classifier("gt")])]
    assert names == ["cuhk_val", "cuhk_val_2", "gt"]


def test_decode_rate_follows_the_768_frame_rule(tmp_path: Path) -> None:
    long = write_video(tmp_path / "long.mp4", 150, fps=15, size=(32, 32))
    short = write_video(tmp_path / "short.mp4", 100, fps=10, size=(32, 32))
    assert decode_rate(long, 128, None, 15.0) == pytest.approx(15 * 128 / 150)
    assert decode_rate(short, 128, None, 15.0) == pytest.approx(10.0)
    assert decode_rate(long, 128, 7.5, 15.0) == 7.5  # the annotation's own fps wins
    source = open_source(long, decode_rate(long, 128, None, 15.0), (32, 32))
    try:
        assert len(source) == 128  # the whole video in one clip
    finally:
        source.close()


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """An untrained tiny detector and a 3-video validation subset, one video not on disk."""
    root = tmp_path_factory.mktemp("afsd_infer")
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", 100, fps=10, size=(64, 64))  # 10 s, annotated as 5 s
    write_video(videos / "b.mp4", 150, fps=15, size=(64, 64))  # decoded at 12.8 fps: 128 frames
    db = {
        "a": {"subset": "validation", "duration": 5.0, "annotations": [
            {"segment": [1.0, 3.0], "label": "Bowling"}, {"segment": [3.5, 4.5], "label": "Archery"}]},
        "b": {"subset": "validation", "duration": 10.0, "annotations": [
            {"segment": [2.0, 6.0], "label": "Dodgeball"}]},
        "c": {"subset": "validation", "duration": 8.0, "annotations": [
            {"segment": [0.0, 8.0], "label": "Cheerleading"}]},
        "d": {"subset": "training", "duration": 8.0, "annotations": [
            {"segment": [0.0, 8.0], "label": "Archery"}]},
    }
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"database": db}))
    clf = root / "cuhk.json"  # its classes in another order, one more class than ours
    clf.write_text(json.dumps({"class": ["Dodgeball", "Zumba", "Archery", "Bowling", "Cheerleading"],
                               "results": {"v_a": [0.1, 0.0, 0.2, 0.6, 0.1], "b": [0.5, 0.0, 0.1, 0.1, 0.3]}}))
    listed = root / "video_info_new.csv"
    listed.write_text("video,subset\nv_a,validation\nv_b,validation\nv_d,training\n")
    torch.manual_seed(0)
    cfg = load_config("anet_demo", [f"data.videos={videos}", "train.device=cpu"])
    model = build_detector(cfg)
    assert isinstance(model, AFSD)
    model.eval()
    return {"root": root, "videos": videos, "ann": ann, "clf": clf, "list": listed, "cfg": cfg, "model": model}


def test_subset_under_three_classifiers_and_two_protocols(tiny_set: dict) -> None:
    cfg, model, out = tiny_set["cfg"], tiny_set["model"], tiny_set["root"] / "out"
    specs = [parse_classifier("builtin"), parse_classifier("gt"), parse_classifier(str(tiny_set["clf"]))]
    found = evaluate_afsd(cfg, model, tiny_set["ann"], "validation", out, classifiers=specs,
                          video_list=tiny_set["list"], classes=CLASSES, progress=False)
    assert model.training is False
    assert found["protocols"]["all"]["videos"] == 3
    assert found["protocols"]["all"]["tested"] == 2
    assert found["protocols"]["list"]["videos"] == 2
    for spec in specs:
        where = out / spec.name
        results = json.loads((where / "results.json").read_text())
        assert results["classifier"]["name"] == spec.name
        assert results["classifier"]["oracle"] is (spec.name == "gt")
        assert set(results["results"]) == {"a", "b"}  # the listed validation videos only
        metrics = found["classifiers"][spec.name]["metrics"]
        assert metrics["all"]["num_videos"] == 3
        assert metrics["list"]["num_videos"] == 2
        assert json.loads((where / "metrics.json").read_text()) == metrics["all"]
        assert json.loads((where / "metrics_list.json").read_text()) == metrics["list"]
        # the numbers are those of `tallformer eval --gt FILE --pred results.json`
        again = evaluate(tiny_set["ann"], where / "results.json", ANET_THRESHOLDS, "validation",
                         ignore_unknown_labels=True)
        assert again["mAP"] == metrics["all"]["mAP"]
        a, b = results["results"]["a"], results["results"]["b"]
        assert a
        assert b
        assert max(d["segment"][1] for d in a) <= 5.0  # clipped to the annotated duration
        assert max(d["segment"][1] for d in b) <= 10.0 + 1e-6  # 128 frames at 12.8 fps
        for dets in (a, b):
            scores = [d["score"] for d in dets]
            assert scores == sorted(scores, reverse=True)
    gt = json.loads((out / "gt" / "results.json").read_text())["results"]
    assert {d["label"] for d in gt["a"]} == {"Bowling"}
    assert {d["label"] for d in gt["b"]} == {"Dodgeball"}
    cuhk = json.loads((out / "cuhk" / "results.json").read_text())["results"]
    assert {d["label"] for d in cuhk["a"]} == {"Bowling", "Archery"}  # its top-2 of our classes
    assert {d["label"] for d in cuhk["b"]} == {"Dodgeball", "Cheerleading"}
    builtin = json.loads((out / "builtin" / "results.json").read_text())["results"]
    assert len(builtin["a"]) == 2 * len(gt["a"])  # two video labels per proposal
    # protocol "all" keeps video c (not tested): its class scores AP 0 and weighs in the mean;
    # the other classes' APs are the same under both protocols
    m = found["classifiers"]["gt"]["metrics"]
    assert m["all"]["per_class_AP"]["Cheerleading"] == [0.0] * 10
    assert "Cheerleading" not in m["list"]["per_class_AP"]
    assert m["all"]["per_class_AP"]["Bowling"] == m["list"]["per_class_AP"]["Bowling"]
    assert m["list"]["average_mAP"] >= m["all"]["average_mAP"]


def test_missing_videos_need_a_list_and_a_file_must_cover_them(tiny_set: dict) -> None:
    cfg, model = tiny_set["cfg"], tiny_set["model"]
    with pytest.raises(InferenceError, match=r"1 of 3 test videos are not in .*--videos-list"):
        evaluate_afsd(cfg, model, tiny_set["ann"], "validation", classes=CLASSES, progress=False)
    partial = tiny_set["root"] / "partial.json"
    partial.write_text(json.dumps({"class": CLASSES, "results": {"a": [0.1, 0.2, 0.3, 0.4]}}))
    with pytest.raises(ClassifierError, match="no scores for video 'b'"):
        evaluate_afsd(cfg, model, tiny_set["ann"], "validation", video_list=tiny_set["list"],
                      classifiers=[parse_classifier(str(partial))], classes=CLASSES, progress=False)


def test_infer_video_takes_the_afsd_path(tiny_set: dict) -> None:
    cfg, model = tiny_set["cfg"], tiny_set["model"]
    source = open_source(tiny_set["videos"] / "a.mp4", 10.0, (64, 64))
    try:
        dets = infer_video(model, cfg, source)
    finally:
        source.close()
    assert len(dets) > 0
    assert dets.labels.max() < len(CLASSES)
    assert float(dets.segments.max()) <= 10.0 + 1e-6  # 100 frames at 10 fps
    assert dets.scores.tolist() == sorted(dets.scores.tolist(), reverse=True)
    aset = load_annotations(tiny_set["ann"])
    assert aset.classes == CLASSES


def test_thumos14_test_refuses_the_activitynet_options(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", "--config", "demo", "--checkpoint", "none.pt", "--classifier", "gt"])
    assert code == 2
    assert "--classifier: only for ActivityNet configs (model.kind=afsd" in capsys.readouterr().err
    code = main(["test", "--config", "demo", "--checkpoint", "none.pt", "--videos-list", "l.csv"])
    assert code == 2
    assert "--videos-list: only for ActivityNet" in capsys.readouterr().err
