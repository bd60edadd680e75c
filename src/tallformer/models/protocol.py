"""The detector interface: what the engine may use of a detector of any family.

A detector family (the anchor family `tallformer.models.anchor_detector.TALLFormer`, the
ActivityNet family `tallformer.models.afsd.AFSD`, ...) is an `nn.Module` that satisfies
`DetectorModel`; mypy checks it where the factory table
(`tallformer.engine.factory.FAMILIES`) returns it as one. The engine trains, saves, loads,
tests and counts every family through this interface only; everything else a family has
(its neck, heads, post-processing) is its own business and its inference path's
(`tallformer.engine.families`).

Shapes: ``B`` samples, ``n`` chunks of a window (``k`` of them kept), ``C`` backbone
channels, ``rows`` feature rows per chunk (chunk / backbone temporal stride).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import Tensor, nn

    from tallformer.models.backbone import VideoSwinBackbone

__all__ = ["DetectorModel"]


class DetectorModel(Protocol):
    """What every detector family provides (and what the engine uses of it).

    Family members:

    - ``backbone``: the `VideoSwinBackbone` (the memory bank holds its features; the bank
      build, the weights loader and the optimizer's backbone group use it);
    - ``num_classes``: the action classes it predicts (not counting any background);
    - `forward_losses`: the training forward with the memory bank, returning the losses
      (the training step calls only this, inside DDP when there are several processes);
    - `forward_features`: the inference forward on backbone features (everything after
      the backbone), for the family's inference path.

    Module members (every ``nn.Module`` has them): ``training``, ``parameters``,
    ``named_parameters``, ``named_children``, ``state_dict``, ``load_state_dict``, ``train``,
    ``eval``, ``to``.
    """

    training: bool

    @property
    def backbone(self) -> VideoSwinBackbone: ...

    @property
    def num_classes(self) -> int: ...

    def forward_losses(self, fresh_chunks: Tensor, cached_features: Tensor, keep_mask: Tensor,
                       gt_segments: list[Tensor], gt_labels: list[Tensor], gt_ignore: list[Tensor],
                       valid_frames: Sequence[int] | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """Training forward with the memory bank and the losses.

        Args:
            fresh_chunks: ``[B*k, 3, chunk, H, W]`` the kept chunks, sample by sample, each
                sample's in increasing chunk order (k may be 0: no backbone call).
            cached_features: ``[B, n-k, C, rows]`` the bank's features of the dropped chunks.
            keep_mask: bool ``[B, n]``, True for the kept chunks.
            gt_segments, gt_labels, gt_ignore: per sample ``[M, 2]`` segments (window
                frames), ``[M]`` class indices, ``[G, 2]`` ignore regions.
            valid_frames: per sample, the window's real frames (fewer than ``n * chunk`` for
                a video shorter than the window, whose end is zero-padded); None: all real.
                A family whose original scores padded frames as part of the window ignores it.
        Returns:
            (losses, "loss" the total to minimise; the fresh features ``[B*k, C, rows]``,
            detached, for the bank write-back).
        """
        ...

    def forward_features(self, feats: Tensor) -> Any:
        """Backbone features ``[B, C, T']`` -> the family's raw outputs (its inference path
        reads them)."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]: ...

    def named_children(self) -> Iterator[tuple[str, nn.Module]]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...
