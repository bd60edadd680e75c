"""tallformer: temporal action localization with a long-term memory bank (TALLFormer).

Importing the package is cheap: it pulls in neither torch nor numpy. Subpackages
(`tallformer.models`, `tallformer.memory`, `tallformer.data`) import torch on demand, and
so does the first use of `tallformer.detect`::

    import tallformer
    for d in tallformer.detect("match.mp4", "runs/th14/checkpoints/epoch_0600.pt"):
        print(d.segment, d.label, d.score)
"""

from __future__ import annotations

from typing import Any

from tallformer.errors import TallformerError, TallformerWarning

__version__ = "0.1.0"

__all__ = ["TallformerError", "TallformerWarning", "__version__", "detect"]


def __getattr__(name: str) -> Any:
    """`tallformer.detect` (`tallformer.engine.infer.detect`), imported on first use."""
    if name == "detect":
        from tallformer.engine.infer import detect

        return detect
    raise AttributeError(f"module 'tallformer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "detect"])
