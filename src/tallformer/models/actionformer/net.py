"""ActionFormer's network (original: libs/modeling/meta_archs.py:162-362, `PtTransformer`,
the "LocPointTransformer" of its configs) on features: `backbone` (convTransformer),
`neck` (identity FPN), `cls_head`, `reg_head`, plus the points. Its state dict has exactly
the release's keys (`backbone.embd.0.conv.weight`, ..., `reg_head.offset_head.conv.bias`),
so a release checkpoint maps one to one. The input width `input_dim` is the Video Swin
width; there is no projection in front.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor, nn

from tallformer.config import actionformer_div_factor, actionformer_windows
from tallformer.models.actionformer.conv_transformer import ConvTransformerBackbone
from tallformer.models.actionformer.fpn import IdentityFPN
from tallformer.models.actionformer.heads import ClsHead, RegHead
from tallformer.models.actionformer.outputs import ActionFormerOutputs
from tallformer.models.actionformer.padding import pad_features
from tallformer.models.actionformer.points import PointGenerator
from tallformer.models.errors import ModelError

if TYPE_CHECKING:
    from tallformer.config import ActionFormerConfig

__all__ = ["THUMOS14_REGRESSION_RANGE", "ActionFormerNet"]

# original: libs/core/config.py:51
THUMOS14_REGRESSION_RANGE: tuple[tuple[float, float], ...] = (
    (0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000))


class ActionFormerNet(nn.Module):
    """ActionFormer's network; defaults = its THUMOS14 model (original:
    libs/core/config.py:43-100, configs/thumos_i3d.yaml) except `input_dim`, `num_classes`
    and `max_seq_len` (576, see `tallformer.config.ActionFormerConfig`).

    Levels: the backbone makes 1 + backbone_arch[2] levels (stride scale_factor^l); the FPN
    keeps those from `fpn_start_level` on, one regression range each. `max_seq_len` must be
    a multiple of `max_div_factor` (stride x 2 * (window // 2), max over the levels).

    Use: `x, mask = net.pad(feats, lengths)` (the release's padding rule, training or
    inference by `net.training`), then `outputs = net(x, mask)` (`ActionFormerOutputs`).

    Example:
        >>> import torch
        >>> net = ActionFormerNet(16, 3, backbone_arch=(1, 1, 2), n_head=2, n_mha_win_size=5, embd_dim=16,
        ...                       fpn_dim=16, head_dim=16, regression_range=((0, 4), (4, 8), (8, 1000)),
        ...                       max_seq_len=32).eval()
        >>> x, mask = net.pad(torch.randn(1, 16, 20))
        >>> out = net(x, mask)
        >>> [tuple(c.shape) for c in out.cls_logits], [int(m.sum()) for m in out.masks]
        ([(1, 32, 3), (1, 16, 3), (1, 8, 3)], [20, 10, 5])
    """

    def __init__(self, input_dim: int, num_classes: int, *, backbone_arch: Sequence[int] = (2, 2, 5),
                 scale_factor: int = 2,
                 regression_range: Sequence[Sequence[float]] = THUMOS14_REGRESSION_RANGE,
                 n_head: int = 4, n_mha_win_size: int | Sequence[int] = 19, embd_kernel_size: int = 3,
                 embd_dim: int = 512, embd_with_ln: bool = True, fpn_dim: int = 512, fpn_with_ln: bool = True,
                 fpn_start_level: int = 0, head_dim: int = 512, head_kernel_size: int = 3,
                 head_num_layers: int = 3, head_with_ln: bool = True, use_abs_pe: bool = False,
                 use_rel_pe: bool = False, max_seq_len: int = 576, max_buffer_len_factor: float = 6.0,
                 dropout: float = 0.0, droppath: float = 0.1, cls_prior_prob: float = 0.01,
                 head_empty_cls: Sequence[int] = ()) -> None:
        super().__init__()
        arch = [int(a) for a in backbone_arch]
        self.fpn_strides = [scale_factor ** i for i in range(fpn_start_level, arch[-1] + 1)]
        self.regression_range = [tuple(float(v) for v in r) for r in regression_range]
        if len(self.fpn_strides) != len(self.regression_range):
            raise ModelError(f"{len(self.regression_range)} regression ranges for {len(self.fpn_strides)} FPN levels")
        self.scale_factor = scale_factor
        self.num_classes = num_classes
        self.input_dim = input_dim
        self.max_seq_len = max_seq_len
        self.max_buffer_len_factor = max_buffer_len_factor
        n = arch[-1] + 1
        self.mha_win_size = ([int(n_mha_win_size)] * n if isinstance(n_mha_win_size, int)
                             else [int(w) for w in n_mha_win_size])
        if len(self.mha_win_size) != n:
            raise ModelError(f"n_mha_win_size has {len(self.mha_win_size)} windows for {n} backbone levels")
        self.max_div_factor = actionformer_div_factor(self.fpn_strides, self.mha_win_size)
        if max_seq_len % self.max_div_factor:
            raise ModelError(f"max_seq_len {max_seq_len} must be a multiple of {self.max_div_factor} "
                             "(FPN stride x window step)")
        self.backbone = ConvTransformerBackbone(
            input_dim, embd_dim, n_head, embd_kernel_size, max_seq_len, arch, self.mha_win_size, scale_factor,
            embd_with_ln, 0.0, dropout, droppath, use_abs_pe, use_rel_pe)
        self.neck = IdentityFPN([embd_dim] * n, fpn_dim, fpn_start_level, fpn_with_ln)
        self.point_generator = PointGenerator(self.fpn_strides, self.regression_range)
        self.cls_head = ClsHead(fpn_dim, head_dim, num_classes, cls_prior_prob, head_num_layers,
                                head_kernel_size, head_with_ln, head_empty_cls)
        self.reg_head = RegHead(fpn_dim, head_dim, len(self.fpn_strides), head_num_layers, head_kernel_size,
                                head_with_ln)

    @classmethod
    def from_config(cls, cfg: ActionFormerConfig, input_dim: int, num_classes: int) -> ActionFormerNet:
        """The network of `model.actionformer` on `input_dim` features, `num_classes` classes.

        Example:
            >>> from tallformer.config import load_config
            >>> cfg = load_config(None, [])
            >>> import torch
            >>> with torch.device("meta"):
            ...     net = ActionFormerNet.from_config(cfg.model.actionformer, 1024, 20)
            >>> len(net.state_dict())
            229
        """
        t = cfg.train_cfg
        return cls(input_dim, num_classes, backbone_arch=cfg.backbone_arch, scale_factor=cfg.scale_factor,
                   regression_range=cfg.regression_range, n_head=cfg.n_head,
                   n_mha_win_size=actionformer_windows(cfg), embd_kernel_size=cfg.embd_kernel_size,
                   embd_dim=cfg.embd_dim, embd_with_ln=cfg.embd_with_ln, fpn_dim=cfg.fpn_dim,
                   fpn_with_ln=cfg.fpn_with_ln, fpn_start_level=cfg.fpn_start_level, head_dim=cfg.head_dim,
                   head_kernel_size=cfg.head_kernel_size, head_num_layers=cfg.head_num_layers,
                   head_with_ln=cfg.head_with_ln, use_abs_pe=cfg.use_abs_pe, use_rel_pe=cfg.use_rel_pe,
                   max_seq_len=cfg.max_seq_len, max_buffer_len_factor=cfg.max_buffer_len_factor,
                   dropout=t.dropout, droppath=t.droppath, cls_prior_prob=t.cls_prior_prob,
                   head_empty_cls=t.head_empty_cls)

    def pad(self, feats: Tensor, lengths: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        """`feats [B, C, T]` (valid `lengths`, default T) -> (`[B, C, P]`, mask `[B, 1, P]`)
        by the release's rule: P = max_seq_len in training, else max_seq_len or the next
        multiple of max_div_factor (`tallformer.models.actionformer.padding`)."""
        return pad_features(feats, lengths, self.max_seq_len, self.max_div_factor, self.training)

    def forward(self, x: Tensor, mask: Tensor) -> ActionFormerOutputs:
        """`x [B, input_dim, P]`, mask bool `[B, 1, P]` (from `pad`) -> per-level outputs."""
        if x.dim() != 3 or x.shape[1] != self.input_dim:
            raise ModelError(f"ActionFormerNet: expected features [B, {self.input_dim}, T], got {list(x.shape)}")
        feats, masks = self.backbone(x, mask)
        fpn_feats, fpn_masks = self.neck(feats, masks)
        points = self.point_generator([f.shape[-1] for f in fpn_feats], x.device)
        cls_logits = self.cls_head(fpn_feats, fpn_masks)
        offsets = self.reg_head(fpn_feats, fpn_masks)
        return ActionFormerOutputs(
            cls_logits=[c.permute(0, 2, 1) for c in cls_logits],
            offsets=[o.permute(0, 2, 1) for o in offsets],
            masks=[m.squeeze(1) for m in fpn_masks],
            points=points,
        )
