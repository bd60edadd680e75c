"""The engine's errors: a run that cannot start or continue (`TrainingError`), a test or
detection that cannot (`InferenceError`). Both are `tallformer.TallformerError`s whose
message names the file, key or step and the fix."""

from __future__ import annotations

from tallformer.errors import TallformerError

__all__ = ["InferenceError", "TrainingError"]


class TrainingError(TallformerError):
    """A run that cannot start or continue; the message names the file, key or step."""


class InferenceError(TallformerError):
    """A test or detection run that cannot start: a missing setting, a model and data that
    do not fit; the message names the file or key and the fix."""
