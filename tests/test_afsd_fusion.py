"""ActivityNet (AFSD) inference on hand-made cases: decoding and scoring, soft-NMS (ours and
the original's loop, AFSD/common/segment_utils.py:128-157), clipping, and the video-level
label fusion modes builtin / FILE / gt (AFSD/anet_video_cls/test.py:143-241)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tallformer.config import ConfigError, load_config
from tallformer.models.afsd_fusion import (
    ClassifierError,
    builtin_video_labels,
    fuse_labels,
    fuse_video,
    gt_video_labels,
    load_video_classifier,
    score_video_labels,
)
from tallformer.models.afsd_outputs import AfsdOutputs
from tallformer.models.afsd_pooling import make_priors
from tallformer.models.afsd_postprocess import (
    AfsdPostProcess,
    decode_proposals,
    soft_nms_drop_last,
)
from tallformer.models.outputs import Detections
from tallformer.ops.segments import nms

LN3 = math.log(3.0)


def _outputs() -> AfsdOutputs:
    """Two priors of one level in a 16-frame clip (centres at frames 4 and 12)."""
    z = torch.zeros(1, 2, 1)
    return AfsdOutputs(
        action_logits=torch.zeros(1, 4), loc=torch.tensor([[[2.0, 2.0], [4.0, 8.0]]]),
        conf=torch.tensor([[[0.0, 0.0], [0.0, LN3]]]),
        prop_loc=torch.tensor([[[0.5, -0.5], [0.0, 0.0]]]),
        prop_conf=torch.tensor([[[0.0, LN3], [0.0, 0.0]]]),
        center=torch.tensor([[[0.0], [LN3]]]), priors=make_priors([2]),
        start=z, end=z, start_loc_prop=z, end_loc_prop=z, start_conf_prop=z, end_conf_prop=z,
    )


def test_decode_refines_and_scores() -> None:
    segments, scores = decode_proposals(_outputs(), 0, 16)
    # prior 0: d' = (2, 2) + 4 / 2 * (0.5, -0.5) = (3, 1) around frame 4; prior 1: (4, 8)
    # around 12 -> [8, 20] clamped to the clip
    torch.testing.assert_close(segments, torch.tensor([[1.0, 5.0], [8.0, 16.0]]))
    # ((softmax(conf)_1 + softmax(prop_conf)_1) / 2) * sigmoid(center)
    torch.testing.assert_close(scores, torch.tensor([(0.5 + 0.75) / 2 * 0.5, (0.75 + 0.5) / 2 * 0.75]))


def test_postprocess_soft_nms_clip_and_offset() -> None:
    post = AfsdPostProcess(num_frames=16)
    (det,) = post(_outputs(), [10], [100])
    # disjoint proposals: soft-NMS keeps both, best first; [8, 16] clipped to the video's 10 frames
    torch.testing.assert_close(det.segments, torch.tensor([[108.0, 110.0], [101.0, 105.0]]))
    torch.testing.assert_close(det.scores, torch.tensor([0.46875, 0.3125]))
    assert det.labels.tolist() == [0, 0]
    (det,) = AfsdPostProcess(num_frames=16)(_outputs(), [8])
    assert det.segments.tolist() == [[1.0, 5.0]]  # [8, 8] is empty after clipping: dropped
    # the original's loop never keeps the last open candidate (O9)
    (det,) = AfsdPostProcess(num_frames=16, drop_last=True)(_outputs(), [16])
    assert det.segments.tolist() == [[8.0, 16.0]]
    with pytest.raises(ValueError, match="2 lengths"):
        post(_outputs(), [10, 10])


def test_original_soft_nms_is_ours_minus_the_last_candidate() -> None:
    g = torch.Generator().manual_seed(0)
    start = torch.rand(12, generator=g) * 50
    seg = torch.stack([start, start + 5 + torch.rand(12, generator=g) * 30], dim=1)
    scores = 0.1 + 0.9 * torch.rand(12, generator=g)
    ours_seg, ours_sc, _ = nms(seg, scores, torch.zeros(12, dtype=torch.long), "soft_gaussian",
                               sigma=0.85, min_score=1e-9)
    orig_seg, orig_sc = soft_nms_drop_last(seg, scores, sigma=0.85, top_k=5000, score_threshold=1e-9)
    assert len(ours_sc) == 12
    assert len(orig_sc) == 11
    order = torch.sort(orig_sc, descending=True).indices
    torch.testing.assert_close(orig_seg[order], ours_seg[:11])
    torch.testing.assert_close(orig_sc[order], ours_sc[:11], rtol=1e-5, atol=1e-7)
    # one candidate: the original returns nothing; top_k binds
    assert soft_nms_drop_last(seg[:1], scores[:1])[1].numel() == 0
    assert soft_nms_drop_last(seg, scores, top_k=3)[1].numel() == 3


def test_postprocess_from_config() -> None:
    post = AfsdPostProcess.from_config(load_config("anet_swin_b"))
    assert (post.num_frames, post.score_thr, post.method, post.sigma, post.max_num, post.drop_last) == (
        768, 1e-9, "soft_gaussian", 0.85, 5000, False)
    with pytest.raises(ConfigError, match=r"needs test\.nms_method=soft_gaussian"):
        AfsdPostProcess.from_config(load_config("anet_demo", ["model.afsd.soft_nms_drop_last=true",
                                                              "test.nms_method=hard"]))


def test_builtin_labels_top2_with_and_without_background() -> None:
    probs = torch.tensor([0.5, 0.1, 0.3, 0.1])  # background, actions 0..2
    labels, scores = builtin_video_labels(probs)
    assert labels.tolist() == [1, 0]  # the two best actions (ties: the lower index)
    torch.testing.assert_close(scores, torch.tensor([0.3, 0.1]))
    # the original (O8): background is among the top 2 and becomes the last class
    labels, scores = builtin_video_labels(probs, include_background=True)
    assert labels.tolist() == [2, 1]
    torch.testing.assert_close(scores, torch.tensor([0.5, 0.3]))
    assert builtin_video_labels(probs, top_k=1)[0].tolist() == [1]


def test_fuse_labels_each_proposal_times_each_label() -> None:
    props = Detections(torch.tensor([[0.0, 2.0], [5.0, 9.0]]), torch.tensor([0.8, 0.5]),
                       torch.zeros(2, dtype=torch.long))
    det = fuse_labels(props, torch.tensor([3, 1]), torch.tensor([0.5, 0.25]))
    assert det.segments.tolist() == [[0.0, 2.0], [0.0, 2.0], [5.0, 9.0], [5.0, 9.0]]
    torch.testing.assert_close(det.scores, torch.tensor([0.4, 0.2, 0.25, 0.125]))
    assert det.labels.tolist() == [3, 1, 3, 1]
    labels, scores = gt_video_labels(2)
    det = fuse_labels(props, labels, scores)  # the oracle: the proposal scores unchanged
    assert det.labels.tolist() == [2, 2]
    torch.testing.assert_close(det.scores, props.scores)
    empty = Detections(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert len(fuse_labels(empty, torch.tensor([1, 2]), torch.tensor([0.5, 0.5]))) == 0


def test_classifier_file_reordered_by_class_name(tmp_path) -> None:
    """The CUHK format: {"results": {id without v_: [scores]}, "class": [names]}."""
    path = tmp_path / "cuhk.json"
    path.write_text(json.dumps({"results": {"abc": [0.1, 0.7, 0.2], "v_def": [0.3, 0.3, 0.4]},
                                "class": ["Zumba", "Archery", "Bungee"]}))
    clf = load_video_classifier(path, ["Archery", "Bungee", "Zumba"])
    torch.testing.assert_close(clf("v_abc"), torch.tensor([0.7, 0.2, 0.1]))  # v_ prefix optional
    torch.testing.assert_close(clf("def"), torch.tensor([0.3, 0.4, 0.3]))
    labels, scores = score_video_labels(clf("abc"))
    assert labels.tolist() == [0, 1]
    torch.testing.assert_close(scores, torch.tensor([0.7, 0.2]))
    assert load_video_classifier(path, ["Bungee"]).scores["abc"].tolist() == [pytest.approx(0.2)]
    with pytest.raises(ClassifierError, match="no scores for video 'ghi'"):
        clf("ghi")
    with pytest.raises(ClassifierError, match="1 of the config's classes are not in its \"class\" list: Surfing"):
        load_video_classifier(path, ["Archery", "Surfing"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": {"abc": [0.1]}, "class": ["A", "B"]}))
    with pytest.raises(ClassifierError, match="has 1 scores; expected a list of 2"):
        load_video_classifier(bad, ["A"])
    bad.write_text("[]")
    with pytest.raises(ClassifierError, match="not a video classifier file"):
        load_video_classifier(bad, ["A"])


def test_fuse_video_modes(tmp_path) -> None:
    props = Detections(torch.tensor([[0.0, 2.0]]), torch.tensor([0.5]), torch.zeros(1, dtype=torch.long))
    probs = torch.tensor([0.1, 0.2, 0.6, 0.1])
    det = fuse_video(props, "builtin", action_probs=probs)
    assert det.labels.tolist() == [1, 0]
    torch.testing.assert_close(det.scores, torch.tensor([0.3, 0.1]))
    det = fuse_video(props, "gt", gt_label=2)
    assert det.labels.tolist() == [2]
    assert det.scores.tolist() == [0.5]
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"results": {"x": [0.2, 0.5, 0.3]}, "class": ["a", "b", "c"]}))
    det = fuse_video(props, load_video_classifier(path, ["a", "b", "c"]), video_id="x", top_k=1)
    assert det.labels.tolist() == [1]
    with pytest.raises(ValueError, match="needs action_probs"):
        fuse_video(props, "builtin")
