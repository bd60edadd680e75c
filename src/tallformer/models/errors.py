"""`ModelError`: settings or inputs the model cannot work with (the message says which)."""

from __future__ import annotations

from tallformer.errors import TallformerError

__all__ = ["ModelError"]


class ModelError(TallformerError, ValueError):
    """A model that cannot be built from these settings, or inputs that do not fit it
    (e.g. labels outside the configured classes, bank features of another backbone).
    Also a `ValueError`, for callers that caught that before."""
