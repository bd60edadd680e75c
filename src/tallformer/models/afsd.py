"""The ActivityNet-1.3 detector: Video Swin + the SRM/TCM/conv-TDM/GN-FPN neck + an
AFSD-style anchor-free coarse-and-refine head + a video-level action classifier
(original: AFSD/anet_video_cls/BDNet.py, membank/model.py; neck:
AFSD/anet_video_cls/configs/membank/1.0.0.py:41-79).

Shapes for one 768-frame clip (paper config)::

    backbone           [B, 1024, 384]       -> action head: mean over T, dropout, Linear -> [B, 201]
    neck               SRM 96, TCM 96, TDM 96|48|24|12|6|3, FPN 512 ch
    coarse (per level) loc/conf towers -> distances [B, t, 2] (frames), logits [B, t, 2]
    frame branch       level 0 nearest-upsampled to 768 -> 3 conv blocks -> F_frame [B, 512, 768]
    refinement         per level, boundary max pooling of the coarse proposals' start / end
                       regions on the level and on F_frame -> offsets, logits, quality
    all levels         P = 96 + 48 + 24 + 12 + 6 + 3 = 189 priors

`AFSD` satisfies `tallformer.models.protocol.DetectorModel` (the family ``model.kind: afsd``,
built by `build_afsd` through the engine's factory table), so the same training engine
trains it; its inference path is `tallformer.engine.families.afsd`. Its own entry points:
`forward_train` (head outputs and fresh features), `loss`, `forward_infer` (a whole clip),
`predict` (class-agnostic proposals) and `action_probs` (the video-level softmax).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tallformer.config import ConfigError
from tallformer.models.afsd_loss import AfsdLoss
from tallformer.models.afsd_outputs import AfsdOutputs
from tallformer.models.afsd_pooling import (
    boundary_max_pool,
    make_priors,
    proposal_regions,
)
from tallformer.models.afsd_postprocess import AfsdPostProcess
from tallformer.models.backbone import VideoSwinBackbone, build_backbone_from_config
from tallformer.models.errors import ModelError
from tallformer.models.neck import Neck, norm_layer
from tallformer.models.outputs import Detections
from tallformer.models.shared import compose_features, num_tokens

if TYPE_CHECKING:
    from tallformer.config import Config

__all__ = [
    "AFSD",
    "ActionHead",
    "AfsdHead",
    "AfsdOutputs",
    "ProposalBranch",
    "ScaleExp",
    "build_afsd",
    "init_afsd_weights",
]


def _conv_gn_relu(c_in: int, c_out: int, kernel: int, groups: int) -> nn.Sequential:
    """Conv1d (bias, "same" zero padding) -> GroupNorm -> ReLU (original: the AFSD `Unit1D`
    keeps its bias before a GroupNorm, AFSD/common/layers.py:174-210)."""
    return nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2),
                         norm_layer("gn", c_out, groups), nn.ReLU(inplace=True))


class ScaleExp(nn.Module):
    """`min(exp(scale * z), max_value)` with a learnable scalar `scale` (init 1) (original:
    AFSD/anet_video_cls/BDNet.py:89-95). `max_value` None: no cap."""

    def __init__(self, max_value: float | None = 4.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.max_value = max_value

    def forward(self, z: Tensor) -> Tensor:
        y = torch.exp(z * self.scale)
        return y if self.max_value is None else y.clamp(max=self.max_value)


class ActionHead(nn.Module):
    """Video-level classifier on the backbone features (original:
    AFSD/anet_video_cls/BDNet.py:98-133): mean over T -> Dropout(0.5) -> Linear(C -> K + 1).
    `[B, C, T] -> [B, K + 1]`; index 0 is background."""

    def __init__(self, in_channels: int = 1024, num_classes: int = 201, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.cls = nn.Linear(in_channels, num_classes)

    def forward(self, feats: Tensor) -> Tensor:
        return self.cls(self.dropout(feats.mean(dim=-1)))


class ProposalBranch(nn.Module):
    """One refinement branch, shared by all levels (original: AFSD/anet_video_cls/BDNet.py:136-196).

    fm_short = ReLU(GN(Conv1d k1 C -> Cp (x))); Xlr = ReLU(GN(Conv1d k1 C -> 2Cp (x)));
    P1 = BMP(Xlr, level regions) `[B, 2Cp, t]`; P2 = ReLU(GN(Conv1d k1 C_f -> Cp
    (BMP(F_frame, frame regions)))); out = ReLU(GN(Conv1d k1 4Cp -> C ([P2, P1, fm_short]))).
    """

    def __init__(self, in_channels: int = 512, proposal_channels: int = 512,
                 frame_channels: int | None = None, groups: int = 32) -> None:
        super().__init__()
        frame_channels = in_channels if frame_channels is None else frame_channels
        self.cur_point_conv = _conv_gn_relu(in_channels, proposal_channels, 1, groups)
        self.lr_conv = _conv_gn_relu(in_channels, 2 * proposal_channels, 1, groups)
        self.roi_conv = _conv_gn_relu(frame_channels, proposal_channels, 1, groups)
        self.proposal_conv = _conv_gn_relu(4 * proposal_channels, in_channels, 1, groups)

    def forward(self, x: Tensor, level_regions: Tensor, frame_pooled: Tensor) -> tuple[Tensor, Tensor]:
        """`x [B, C, t]`, `level_regions [B, t, 4]`, `frame_pooled [B, C_f, t]` (the
        boundary max pooling of F_frame, the same for both branches) -> (proposal feature
        `[B, C, t]`, Xlr `[B, 2Cp, t]`)."""
        fm_short = self.cur_point_conv(x)
        lr = self.lr_conv(x)
        pooled = boundary_max_pool(lr, level_regions)
        roi = self.roi_conv(frame_pooled)
        return self.proposal_conv(torch.cat([roi, pooled, fm_short], dim=1)), lr


class AfsdHead(nn.Module):
    """Coarse anchor-free stage, frame-level branch and refinement stage, all shared across
    levels (original: AFSD/anet_video_cls/BDNet.py:212-478).

    Args:
        channels: FPN channels C (512).
        proposal_channels: Cp (512).
        num_frames: clip length T in frames (768).
        strides: frames per step of each level (8, 16, ..., 256).
        groups: GroupNorm groups (32).
        max_stride_distance: the distance cap of `ScaleExp` in strides (4), None for none.
    """

    def __init__(self, channels: int = 512, proposal_channels: int = 512, num_frames: int = 768,
                 strides: Sequence[int] = (8, 16, 32, 64, 128, 256), groups: int = 32,
                 max_stride_distance: float | None = 4.0) -> None:
        super().__init__()
        if channels % 2:
            raise ModelError(f"AFSD head: the FPN channels ({channels}) must be even (start / end halves)")
        self.num_frames = num_frames
        self.strides = [int(s) for s in strides]
        self.loc_tower = nn.Sequential(*(_conv_gn_relu(channels, channels, 3, groups) for _ in range(2)))
        self.conf_tower = nn.Sequential(*(_conv_gn_relu(channels, channels, 3, groups) for _ in range(2)))
        self.loc_head = nn.Conv1d(channels, 2, 3, padding=1)
        self.conf_head = nn.Conv1d(channels, 2, 3, padding=1)
        self.loc_proposal_branch = ProposalBranch(channels, proposal_channels, channels, groups)
        self.conf_proposal_branch = ProposalBranch(channels, proposal_channels, channels, groups)
        self.prop_loc_head = nn.Conv1d(channels, 2, 1)
        self.prop_conf_head = nn.Conv1d(channels, 2, 1)
        self.center_head = nn.Conv1d(channels, 1, 3, padding=1)
        self.frame_branch = nn.Sequential(  # BDNet.py:289-299 ("deconv")
            _conv_gn_relu(channels, channels, 3, groups),
            _conv_gn_relu(channels, channels, 3, groups),
            _conv_gn_relu(channels, channels, 1, groups),
        )
        self.scales = nn.ModuleList(ScaleExp(max_stride_distance) for _ in self.strides)

    def refine_modules(self) -> list[nn.Module]:
        """The modules whose convs start N(0, 0.01) (original: BDNet.py:481-557)."""
        return [self.loc_tower, self.conf_tower, self.loc_head, self.conf_head,
                self.loc_proposal_branch, self.conf_proposal_branch, self.prop_loc_head,
                self.prop_conf_head, self.center_head]

    def forward(self, pyramid: list[Tensor], action_logits: Tensor) -> AfsdOutputs:
        """`pyramid[l] [B, C, t_l]` (FPN outputs), `action_logits [B, K + 1]` -> `AfsdOutputs`."""
        if len(pyramid) != len(self.strides):
            raise ModelError(f"AFSD head: {len(pyramid)} feature levels but {len(self.strides)} strides")
        frame = F.interpolate(pyramid[0], size=self.num_frames, mode="nearest")  # frame f <- cell f // 8
        frame = self.frame_branch(frame)  # F_frame [B, C, T]
        half = frame.shape[1] // 2
        priors = make_priors([f.shape[-1] for f in pyramid], frame.device)
        locs, confs, prop_locs, prop_confs, centers = [], [], [], [], []
        boundary: list[Tensor] = []
        first = 0
        for level, feat in enumerate(pyramid):
            t = feat.shape[-1]
            loc_feat = self.loc_tower(feat)
            conf_feat = self.conf_tower(feat)
            loc = self.scales[level](self.loc_head(loc_feat)).transpose(1, 2) * self.strides[level]
            locs.append(loc)  # [B, t, 2] frames
            confs.append(self.conf_head(conf_feat).transpose(1, 2))
            level_regions, frame_regions = proposal_regions(loc, priors[first:first + t, 0],
                                                            self.num_frames)
            first += t
            frame_pooled = boundary_max_pool(frame, frame_regions)
            loc_prop, loc_lr = self.loc_proposal_branch(loc_feat, level_regions, frame_pooled)
            conf_prop, conf_lr = self.conf_proposal_branch(conf_feat, level_regions, frame_pooled)
            if level == 0:
                n = loc_lr.shape[1] // 2
                boundary = [loc_lr[:, :n].transpose(1, 2), loc_lr[:, n:].transpose(1, 2),
                            conf_lr[:, :n].transpose(1, 2), conf_lr[:, n:].transpose(1, 2)]
            prop_locs.append(self.prop_loc_head(loc_prop).transpose(1, 2))
            prop_confs.append(self.prop_conf_head(conf_prop).transpose(1, 2))
            centers.append(self.center_head(loc_prop).transpose(1, 2))
        return AfsdOutputs(
            action_logits=action_logits,
            loc=torch.cat(locs, 1), conf=torch.cat(confs, 1),
            prop_loc=torch.cat(prop_locs, 1), prop_conf=torch.cat(prop_confs, 1),
            center=torch.cat(centers, 1), priors=priors,
            start=frame[:, :half].transpose(1, 2), end=frame[:, half:].transpose(1, 2),
            start_loc_prop=boundary[0],
            end_loc_prop=boundary[1], start_conf_prop=boundary[2], end_conf_prop=boundary[3],
        )


def init_afsd_weights(modules: Sequence[nn.Module], refine: Sequence[nn.Module]) -> None:
    """The original's init (AFSD/anet_video_cls/BDNet.py:481-557): every Conv1d in `modules`
    (neck, action head, head) Xavier-uniform with bias 0 and every GroupNorm 1 / 0; then
    the Conv1d layers of `refine` N(0, 0.01) with bias 0. Linear layers keep their init."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    for module in refine:
        for m in module.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


class AFSD(nn.Module):
    """The ActivityNet detector: `backbone`, `neck`, `action_head`, `head` (`AfsdHead`),
    with the losses (`criterion`) and the post-processing (`post_process`).

    `num_frames` is the clip length T every forward expects (768: shorter videos are
    zero-padded, original: AFSD/anet_video_cls/membank/membank_dataset.py:164-176).
    """

    def __init__(self, backbone: VideoSwinBackbone, neck: Neck, action_head: ActionHead,
                 head: AfsdHead, criterion: AfsdLoss, post_process: AfsdPostProcess) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.action_head = action_head
        self.head = head
        self.criterion = criterion
        self.post_process = post_process

    @property
    def num_frames(self) -> int:
        return self.head.num_frames

    @property
    def num_classes(self) -> int:
        """The action classes (the action head's outputs less the background)."""
        return self.action_head.cls.out_features - 1

    def forward_features(self, feats: Tensor) -> AfsdOutputs:
        """Backbone features `[B, C, T / 2]` -> `AfsdOutputs` (neck, action head, head)."""
        rows = self.num_frames // self.backbone.temporal_stride
        if feats.shape[-1] != rows:
            raise ModelError(f"AFSD: the clip gives {feats.shape[-1]} feature steps but the model "
                             f"expects {rows} (data.num_frames = {self.num_frames}); pad every clip "
                             f"to {self.num_frames} frames")
        return self.head(self.neck(feats), self.action_head(feats))

    def forward_train(self, fresh_chunks: Tensor, cached_features: Tensor,
                      keep_mask: Tensor) -> tuple[AfsdOutputs, Tensor]:
        """Training forward with the memory bank; arguments and the fresh features returned
        as `tallformer.models.protocol.DetectorModel.forward_losses` (original:
        AFSD/anet_video_cls/membank/model.py:29-104)."""
        feats, detached = compose_features(self.backbone, fresh_chunks, cached_features,
                                           keep_mask, next(self.neck.parameters()))
        return self.forward_features(feats), detached

    def forward_losses(self, fresh_chunks: Tensor, cached_features: Tensor, keep_mask: Tensor,
                       gt_segments: list[Tensor], gt_labels: list[Tensor], gt_ignore: list[Tensor],
                       valid_frames: Sequence[int] | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """`forward_train` then `loss` (`tallformer.models.protocol.DetectorModel`).
        `valid_frames` is not used: a short window's zero-padded end is part of the window,
        as the original (AFSD/anet_video_cls/membank/model.py:29-104: every clip is T frames)."""
        del valid_frames
        outputs, detached = self.forward_train(fresh_chunks, cached_features, keep_mask)
        return self.loss(outputs, gt_segments, gt_labels, gt_ignore), detached

    def forward_infer(self, clip: Tensor) -> AfsdOutputs:
        """The whole clip `[B, 3, T, H, W]` through the backbone (chunk-wise, no bank)."""
        return self.forward_features(self.backbone(clip))

    def loss(self, outputs: AfsdOutputs, gt_segments: list[Tensor], gt_labels: list[Tensor],
             gt_ignore: list[Tensor] | None = None) -> dict[str, Tensor]:
        """The losses of `AfsdLoss` (segments in clip frames, labels class indices; ignore
        regions are not used: ActivityNet has none). "loss" is the total."""
        return self.criterion(outputs, gt_segments, gt_labels)

    def action_probs(self, outputs: AfsdOutputs) -> Tensor:
        """Softmax of the video-level logits: `[B, K + 1]`, index 0 background."""
        return torch.softmax(outputs.action_logits.float(), dim=-1)

    def predict(self, outputs: AfsdOutputs, lengths: Sequence[int] | Tensor,
                offsets: Sequence[int] | Tensor | None = None) -> list[Detections]:
        """Class-agnostic proposals per clip, in video frames (labels all 0); see
        `AfsdPostProcess`. Label them with `tallformer.models.afsd_fusion.fuse_labels`."""
        return self.post_process(outputs, lengths, offsets)


def afsd_strides(num_levels: int, temporal_stride: int) -> list[int]:
    """Frames per step of each level: backbone stride (2) x SRM (4) x 2^l: 8, 16, ..., 256."""
    return [temporal_stride * 4 * 2 ** i for i in range(num_levels)]


def build_afsd(cfg: Config) -> AFSD:
    """The ActivityNet detector of `cfg` (`model.kind: afsd`): `model.backbone`, the neck of
    `model.neck` with a convolutional TDM and GroupNorm FPN, the head of `model.afsd`, the
    action head over `model.num_classes` + 1 classes, the post-processing of `test`.
    Works under `with torch.device("meta"):`. Does not load backbone weights."""
    a = cfg.model.afsd
    backbone = build_backbone_from_config(cfg.model.backbone)
    nk = cfg.model.neck
    num_levels = len(nk.tdm_kernels) + 1
    if len(a.level_ranges) != num_levels or any(len(r) != 2 or r[0] >= r[1] for r in a.level_ranges):
        raise ConfigError(
            f"model.afsd.level_ranges must give one [lower, upper] pair (lower < upper, frames) per "
            f"feature level ({num_levels} = 1 + len(model.neck.tdm_kernels)), got {a.level_ranges}"
        )
    num_frames = cfg.data.num_frames
    stride = backbone.temporal_stride
    if num_frames % (stride * 4):
        raise ConfigError(f"data.num_frames ({num_frames}) must be a multiple of {stride * 4} "
                          "(frames per level-0 step) for model.kind afsd")
    try:
        neck = Neck.from_config(nk, backbone.num_features, num_tokens(num_frames, stride),
                                tdm_kind="conv", norm="gn", num_groups=a.norm_groups)
        action_head = ActionHead(backbone.num_features, cfg.model.num_classes + 1, a.action_dropout)
        head = AfsdHead(nk.fpn_channels, a.proposal_channels, num_frames,
                        afsd_strides(num_levels, stride), a.norm_groups, a.max_stride_distance)
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None
    init_afsd_weights([neck, action_head, head], head.refine_modules())
    return AFSD(backbone, neck, action_head, head, AfsdLoss.from_config(cfg),
                AfsdPostProcess.from_config(cfg))
