"""ActionFormer's input padding and masks (original: libs/modeling/meta_archs.py:389-427,
`PtTransformer.preprocessing`).

The padded length matters beyond the shapes: after a LayerNorm a padded step holds the
norm's bias, which the next conv reads at the last valid step, whereas at the very end of
the array it reads the conv's zero padding. So the last valid step of each level depends on
whether that level has at least one padded step (not on how many). The release's rule for
the padded length P is kept exactly:

- training: P = `max_seq_len` (every sample right-padded with zeros; longer is an error);
- inference: P = `max_seq_len` when T <= `max_seq_len`, else T rounded up to a multiple of
  `max_div_factor` (the release runs inference on one video at a time; for a batch the
  longest sample sets P).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tallformer.models.errors import ModelError

__all__ = ["pad_features", "padded_length"]


def padded_length(length: int, max_seq_len: int, max_div_factor: int, training: bool) -> int:
    """P for an input of `length` valid steps (see the module docstring).

    Example:
        >>> padded_length(240, 576, 576, training=True), padded_length(700, 576, 576, training=False)
        (576, 1152)
    """
    if training:
        if length > max_seq_len:
            raise ModelError(f"training input of {length} features is longer than max_seq_len {max_seq_len}; "
                             f"raise model.actionformer.max_seq_len (a multiple of {max_div_factor})")
        return max_seq_len
    if length <= max_seq_len:
        return max_seq_len
    return -(-length // max_div_factor) * max_div_factor


def pad_features(feats: Tensor, lengths: Sequence[int] | None, max_seq_len: int, max_div_factor: int,
                 training: bool) -> tuple[Tensor, Tensor]:
    """Right-pad `feats [B, C, T]` with zeros to P; steps at or beyond each sample's length
    are zero too (as if the sample had only that many features).

    Args:
        lengths: valid steps per sample (<= T); None = all T.
    Returns:
        (`[B, C, P]`, bool mask `[B, 1, P]`, True on the valid steps).

    Example:
        >>> import torch
        >>> x, m = pad_features(torch.ones(1, 2, 3), [2], max_seq_len=8, max_div_factor=4, training=True)
        >>> x[0, 0].tolist(), m[0, 0].tolist()
        ([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [True, True, False, False, False, False, False, False])
    """
    if feats.dim() != 3:
        raise ModelError(f"features must be [B, C, T], got {list(feats.shape)}")
    b, c, t = feats.shape
    lens = [t] * b if lengths is None else [int(n) for n in lengths]
    if len(lens) != b or any(not 0 < n <= t for n in lens):
        raise ModelError(f"lengths {lens} must give one length in [1, {t}] per sample ({b})")
    p = padded_length(max(lens), max_seq_len, max_div_factor, training)
    steps = torch.arange(p, device=feats.device)
    mask = steps[None, :] < torch.as_tensor(lens, device=feats.device)[:, None]
    out = feats.new_zeros(b, c, p)
    out[:, :, :t] = feats
    out = out * mask[:, None, :].to(out.dtype)
    return out, mask[:, None, :]
