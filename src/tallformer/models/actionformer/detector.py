"""The ActionFormer family (`model.kind: actionformer`): the Video Swin backbone with the
memory bank, then ActionFormer's network on its features (original:
libs/modeling/meta_archs.py, `PtTransformer`; its inputs are our backbone's features
instead of I3D ones).

Units: the backbone gives one feature per `feat_stride` = 2 frames (its temporal patch),
covering `num_frames` = 2 frames, so in the release's terms feat_stride = num_frames = 2.
Ground truth arrives in window frames and goes to the feature grid as the release's
dataset does, g = (f - 0.5 num_frames) / feat_stride; detections leave the grid as it
does, seconds = (g feat_stride + 0.5 num_frames) / fps.

Training: a 480-frame window gives 240 features, right-padded to `max_seq_len` (576 by
default). Inference: the whole video's features at once, padded to `max_seq_len` or the
next multiple of `max_div_factor` (`tallformer.models.actionformer.padding`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from tallformer.config import (
    ConfigError,
    actionformer_div_factor,
    actionformer_fpn_strides,
    actionformer_windows,
)
from tallformer.models.actionformer.loss import ActionFormerLoss
from tallformer.models.actionformer.net import ActionFormerNet
from tallformer.models.actionformer.outputs import ActionFormerOutputs
from tallformer.models.actionformer.postprocess import ActionFormerPostProcess
from tallformer.models.actionformer.targets import frames_to_grid
from tallformer.models.backbone import VideoSwinBackbone, build_backbone_from_config
from tallformer.models.errors import ModelError
from tallformer.models.outputs import Detections
from tallformer.models.shared import compose_features

if TYPE_CHECKING:
    from tallformer.config import Config

__all__ = ["ActionFormerDetector", "build_actionformer"]


class ActionFormerDetector(nn.Module):
    """`backbone` (`VideoSwinBackbone`), `actionformer` (`ActionFormerNet`: its state dict
    keys are the release's), `criterion` (`ActionFormerLoss`, holding the loss normaliser
    buffer) and `post_process` (`ActionFormerPostProcess`, no state).

    Example:
        >>> import torch
        >>> from tallformer.config import load_config
        >>> cfg = load_config(None, ["model.kind=actionformer", "model.backbone.arch=tiny",
        ...                          "model.num_classes=3", "model.actionformer.embd_dim=16",
        ...                          "model.actionformer.fpn_dim=16", "model.actionformer.head_dim=16"])
        >>> det = build_actionformer(cfg).eval()
        >>> feats = torch.randn(1, det.backbone.num_features, 300)   # a whole video, 600 frames
        >>> dets = det.infer_features(feats, fps=15.0, duration=40.0)
        >>> bool(((dets.segments >= 0) & (dets.segments <= 40.0)).all())
        True
    """

    def __init__(self, backbone: VideoSwinBackbone, actionformer: ActionFormerNet,
                 criterion: ActionFormerLoss, post_process: ActionFormerPostProcess | None = None) -> None:
        super().__init__()
        if actionformer.input_dim != backbone.num_features:
            raise ModelError(f"ActionFormer's input_dim {actionformer.input_dim} must be the backbone's width "
                             f"{backbone.num_features}")
        self.backbone = backbone
        self.actionformer = actionformer
        self.criterion = criterion
        self.post_process = post_process if post_process is not None else ActionFormerPostProcess()

    @property
    def feat_stride(self) -> int:
        """Frames per feature step (the backbone's temporal stride, 2)."""
        return int(self.backbone.temporal_stride)

    @property
    def num_frames(self) -> int:
        """Frames each feature covers (the backbone's temporal patch, 2)."""
        return int(self.backbone.temporal_stride)

    @property
    def num_classes(self) -> int:
        return self.actionformer.num_classes

    def _param(self) -> Tensor:
        return next(self.actionformer.parameters())

    def forward_features(self, feats: Tensor, lengths: Sequence[int] | None = None) -> ActionFormerOutputs:
        """ActionFormer's network on backbone features `[B, C, T]` (valid `lengths`, default
        T), padded by the release's rule for the current mode (`train()` / `eval()`).

        Runs in the network's own dtype (float32) with autocast off, also inside the
        training step's or a test path's bf16/fp16 autocast: the release computes in float32,
        and its masks, LayerNorms and the focal loss's inputs stay as it computes them; only
        the backbone before it runs in the autocast dtype."""
        with torch.autocast(device_type=feats.device.type, enabled=False):
            x, mask = self.actionformer.pad(feats.to(self._param().dtype), lengths)
            return self.actionformer(x, mask)

    def forward_train(self, fresh_chunks: Tensor, cached_features: Tensor, keep_mask: Tensor,
                      valid_frames: Sequence[int] | None = None) -> tuple[ActionFormerOutputs, Tensor]:
        """Training forward with the memory bank.

        Args:
            fresh_chunks: `[B*k, 3, chunk, H, W]` the kept chunks (see
                `tallformer.models.shared.compose_features`).
            cached_features: `[B, n-k, C, rows]` bank features of the dropped chunks.
            keep_mask: bool `[B, n]`.
            valid_frames: real (not padded) frames of each window; None = the whole window.
                Features beyond ceil(frames / 2) are masked out, as if the window ended there.
        Returns:
            (per-level outputs on the window's n * rows features padded to `max_seq_len`,
            fresh features `[B*k, C, rows]` detached, for the bank write-back).
        """
        feats, fresh = compose_features(self.backbone, fresh_chunks, cached_features, keep_mask, self._param())
        lengths = None
        if valid_frames is not None:
            t = feats.shape[-1]
            lengths = [min(max(-(-int(f) // self.feat_stride), 1), t) for f in valid_frames]
        return self.forward_features(feats, lengths), fresh

    def forward_losses(self, fresh_chunks: Tensor, cached_features: Tensor, keep_mask: Tensor,
                       gt_segments: list[Tensor], gt_labels: list[Tensor], gt_ignore: list[Tensor],
                       valid_frames: Sequence[int] | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """`forward_train` then `loss` (`tallformer.models.protocol.DetectorModel`): a window
        shorter than ``data.num_frames`` (`valid_frames`) is masked after its last real
        feature, as the release pads a short video's features."""
        outputs, fresh = self.forward_train(fresh_chunks, cached_features, keep_mask, valid_frames)
        return self.loss(outputs, gt_segments, gt_labels, gt_ignore), fresh

    def loss(self, outputs: ActionFormerOutputs, gt_segments: Sequence[Tensor], gt_labels: Sequence[Tensor],
             gt_ignore: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """ActionFormer's losses for B windows (`ActionFormerLoss`; updates its normaliser).

        Args:
            gt_segments: B tensors `[G, 2]` in window frames (converted with `frames_to_grid`).
            gt_labels: B int tensors `[G]` in [0, num_classes).
            gt_ignore: not used (ActionFormer has no ignore regions).
        Returns:
            {"loss_cls", "loss_reg", "loss"}.
        """
        del gt_ignore
        segs = [frames_to_grid(s.reshape(-1, 2), self.feat_stride, self.num_frames) for s in gt_segments]
        return self.criterion(outputs.masks, outputs.cls_logits, outputs.offsets, outputs.points, segs,
                              list(gt_labels))

    @torch.no_grad()
    def predict(self, outputs: ActionFormerOutputs, fps: float | Sequence[float],
                duration: float | Sequence[float]) -> list[Detections]:
        """Detections in seconds, one per sample (its own fps and duration, or one for all)."""
        b = outputs.cls_logits[0].shape[0]
        fpss = [float(fps)] * b if isinstance(fps, (int, float)) else [float(f) for f in fps]
        durs = [float(duration)] * b if isinstance(duration, (int, float)) else [float(d) for d in duration]
        if len(fpss) != b or len(durs) != b:
            raise ModelError(f"predict: {b} samples but {len(fpss)} fps and {len(durs)} durations")
        return [self.post_process([c[i] for c in outputs.cls_logits], [o[i] for o in outputs.offsets],
                                  outputs.points, [m[i] for m in outputs.masks], fps=fpss[i],
                                  duration=durs[i], feat_stride=self.feat_stride, num_frames=self.num_frames)
                for i in range(b)]

    @torch.no_grad()
    def infer_features(self, feats: Tensor, fps: float, duration: float) -> Detections:
        """One video: its backbone features `[1, C, T]` (one per 2 frames, the whole video)
        -> detections in seconds, after the family's own post-processing. Call in `eval()`.

        Args:
            fps: the frame rate the features were computed at (frames per second).
            duration: the video's length in seconds (detections are clamped to it).
        """
        if feats.dim() != 3 or feats.shape[0] != 1:
            raise ModelError(f"infer_features: one video's features [1, C, T], got {list(feats.shape)}")
        return self.predict(self.forward_features(feats), fps, duration)[0]


def build_actionformer(cfg: Config) -> ActionFormerDetector:
    """The family from `cfg`: `build_backbone_from_config(cfg.model.backbone)`, ActionFormer's
    network from `cfg.model.actionformer` on the backbone's width with
    `cfg.model.num_classes` classes, its loss and post-processing. Does not load
    backbone weights. Works under `with torch.device("meta"):`. Raises `ConfigError` when
    a training window's features do not fit `max_seq_len` or `head_empty_cls` names a class
    that does not exist.

    Example:
        >>> import torch
        >>> from tallformer.config import load_config
        >>> with torch.device("meta"):
        ...     det = build_actionformer(load_config(None, ["model.kind=actionformer"]))
        >>> det.backbone.num_features, det.actionformer.max_seq_len
        (1024, 576)
    """
    a = cfg.model.actionformer
    num_classes = cfg.model.num_classes
    bad = [c for c in a.train_cfg.head_empty_cls if c >= num_classes]
    if bad:
        raise ConfigError(f"model.actionformer.train_cfg.head_empty_cls {bad} are not class ids below "
                          f"model.num_classes ({num_classes})")
    backbone = build_backbone_from_config(cfg.model.backbone)
    window = -(-cfg.data.num_frames // backbone.temporal_stride)
    if window > a.max_seq_len:
        factor = actionformer_div_factor(actionformer_fpn_strides(a), actionformer_windows(a))
        raise ConfigError(f"model.actionformer.max_seq_len {a.max_seq_len} is shorter than a training window's "
                          f"{window} features (data.num_frames {cfg.data.num_frames} / {backbone.temporal_stride}); "
                          f"set it to {-(-window // factor) * factor} (a multiple of {factor})")
    net = ActionFormerNet.from_config(a, backbone.num_features, num_classes)
    t = a.train_cfg
    criterion = ActionFormerLoss(num_classes, t.center_sample, t.center_sample_radius, t.loss_weight,
                                 t.label_smoothing, t.init_loss_norm)
    return ActionFormerDetector(backbone, net, criterion, ActionFormerPostProcess.from_config(a.test_cfg))
