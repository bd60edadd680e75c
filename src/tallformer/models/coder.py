"""Segment coder: centre / log-length deltas of segments relative to anchors.

The original's `DeltaSegmentCoder` with means (0, 0) and stds (1, 1) (original:
vedatad/misc/segment/coders/delta_segment_coder.py:69-173): the arithmetic is
`tallformer.ops.segments.encode` / `decode`, including the hard-coded clamp of the
log-length delta at 1.0 (delta_segment_coder.py:161).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tallformer.ops.segments import decode, encode

__all__ = ["SegmentCoder"]


@dataclass(frozen=True)
class SegmentCoder:
    """`encode(segments [N, 2], anchors [N, 2]) -> deltas [N, 2]` and its inverse `decode`."""

    def encode(self, segments: Tensor, anchors: Tensor) -> Tensor:
        """dc = (c_g - c_a) / w_a, dw = log(w_g / w_a)."""
        return encode(segments, anchors)

    def decode(self, deltas: Tensor, anchors: Tensor, max_length: float | None = None) -> Tensor:
        """Segments `[N, 2]`; with `max_length`, both ends clamped to `[0, max_length]` (test)."""
        return decode(deltas, anchors, max_length=max_length)
