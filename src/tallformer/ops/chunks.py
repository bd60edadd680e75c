"""Runs of consecutive chunk ids: one contiguous read, decode or write per run."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["chunk_runs"]


def chunk_runs(chunk_ids: Sequence[int]) -> list[tuple[int, int, int]]:
    """Split sorted, distinct chunk ids into contiguous runs ``(position, first_id, length)``.

    ``[0, 1, 2, 5, 7, 8] -> [(0, 0, 3), (3, 5, 1), (4, 7, 2)]``; ``position`` is the index
    in ``chunk_ids`` of the run's first id. Raises ``ValueError`` if the ids are not
    strictly ascending integers >= 0.
    """
    runs: list[tuple[int, int, int]] = []
    prev = -1
    for pos, raw in enumerate(chunk_ids):
        c = int(raw)
        if c <= prev:
            raise ValueError(f"chunk ids must be strictly ascending integers >= 0, got {list(chunk_ids)}")
        if runs and c == prev + 1:
            p, first, length = runs[-1]
            runs[-1] = (p, first, length + 1)
        else:
            runs.append((pos, c, 1))
        prev = c
    return runs
