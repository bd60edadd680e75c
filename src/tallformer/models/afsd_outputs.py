"""What the ActivityNet (AFSD) detector returns from a forward pass: `AfsdOutputs`.

Shapes for B clips of T frames with P priors over all levels (paper: T = 768, P = 189,
level 0 of t0 = 96 steps, C = 512 channels, Cp = 512 proposal channels; original:
AFSD/anet_video_cls/BDNet.py:458-478,570-608). A NamedTuple, so DDP and autocast see
plain tensors.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["AfsdOutputs"]


class AfsdOutputs(NamedTuple):
    """Raw outputs of `tallformer.models.afsd.AFSD`.

    action_logits: `[B, K + 1]` video-level logits, index 0 background, k = action k - 1.
    loc: `[B, P, 2]` coarse distances (left, right) from each prior's centre, in frames.
    conf: `[B, P, 2]` coarse logits (background, action).
    prop_loc: `[B, P, 2]` refinement offsets, in half proposal widths.
    prop_conf: `[B, P, 2]` refined logits (background, action).
    center: `[B, P, 1]` quality (IoU) logit.
    priors: `[P, 2]` rows (x, level): centre as a fraction of the clip, level index.
    start, end: `[B, T, C/2]` the frame-level features' two channel halves (post-ReLU).
    start_loc_prop, end_loc_prop, start_conf_prop, end_conf_prop: `[B, t0, Cp]` the two
        halves of level 0's boundary features of the loc and conf proposal branches.
    """

    action_logits: Tensor
    loc: Tensor
    conf: Tensor
    prop_loc: Tensor
    prop_conf: Tensor
    center: Tensor
    priors: Tensor
    start: Tensor
    end: Tensor
    start_loc_prop: Tensor
    end_loc_prop: Tensor
    start_conf_prop: Tensor
    end_conf_prop: Tensor
