"""What both importers share: clipping instances to their video's duration, and the one
warning that counts the clipped ones."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable

from tallformer.data.annotations import AnnotationWarning, VideoAnnotation, _preview

__all__ = ["clip_to_durations", "warn_clipped"]


def clip_to_durations(videos: Iterable[VideoAnnotation]) -> tuple[dict[str, Counter[str]], int, int]:
    """Clip instances and ignore regions to [0, duration] in place.

    Returns (per subset: Counter video -> clipped instances, instances that became
    zero-length, ignore regions dropped because they lie past the end).
    """
    clipped: dict[str, Counter[str]] = {}
    emptied = dropped_ambiguous = 0
    for v in videos:
        if v.duration is None:
            continue
        d = v.duration
        for inst in v.annotations:
            s, e = inst.segment
            if e > d:
                clipped.setdefault(v.subset, Counter())[v.video_id] += 1
                inst.segment = (min(s, d), d)
                emptied += s >= d
        kept = [(s, min(e, d)) for s, e in v.ambiguous if s < d]
        dropped_ambiguous += len(v.ambiguous) - len(kept)
        v.ambiguous = kept
    return clipped, emptied, dropped_ambiguous


def warn_clipped(source: str, clipped: dict[str, Counter[str]], emptied: int,
                 dropped_ambiguous: int) -> None:
    """One `AnnotationWarning` summing up `clip_to_durations` (nothing when nothing changed)."""
    total = sum(sum(c.values()) for c in clipped.values())
    if not total and not dropped_ambiguous:
        return
    parts = [
        f"{subset}: {sum(c.values())} in {len(c)} video(s) ({_preview(sorted(c))})"
        for subset, c in clipped.items()
    ]
    msg = (f"{source}: {total} instance(s) end after their video's end and were clipped to it"
           + (f" [{'; '.join(parts)}]" if parts else ""))
    if emptied:
        msg += (f"; {emptied} of them start at or after the end and are now zero-length at the "
                "end: kept so that the counts match the official ground truth (training skips "
                "them; evaluation counts them as missed, as the official evaluation does)")
    if dropped_ambiguous:
        msg += f"; {dropped_ambiguous} ambiguous region(s) past the end dropped"
    warnings.warn(msg, AnnotationWarning, stacklevel=3)
