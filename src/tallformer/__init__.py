"""tallformer: temporal action localization with a long-term memory bank (TALLFormer).

The Python API, in the order of a workflow (each entry point's docstring has an example)::

    import tallformer

    cfg = tallformer.load_config("thumos14_swin_b", ["data.videos=data/thumos14/videos"])
    model = tallformer.build_detector(cfg)                  # the network of model.kind
    loaded = tallformer.load_model("runs/th14/checkpoints/epoch_0600.pt")
    for d in tallformer.detect("match.mp4", "runs/th14/checkpoints/epoch_0600.pt"):
        print(d.segment, d.label, d.score)                   # seconds, class name, score
    metrics = tallformer.evaluate("gt.json", "results.json", [0.3, 0.5, 0.7], subset="test")
    bank = tallformer.MemoryBank.open("banks/th14")          # a memory bank folder

- `load_config`: a shipped config's name or a YAML file, with dotted overrides;
- `build_detector`: the detector of a config (its family, ``model.kind``), random weights;
  `save_model` / `load_model`: a detector with its config and class names, to and from a
  checkpoint (`load_model` also reads training checkpoints and converted originals);
- `detect` (and `Detector`, to load once and detect many): a video file or frame folder
  in, `Detection` records out (segment in seconds, class name, score), best first;
- `evaluate`: ActivityNet-protocol mAP of a results file against a ground truth;
- `MemoryBank`: open (``MemoryBank.open``) or create a memory bank folder.

Importing the package is cheap: it pulls in neither torch nor numpy. These names are
imported on first use (and with them torch where they need it); everything tallformer
raises on purpose is a `TallformerError`.
"""

from __future__ import annotations

from typing import Any

from tallformer.errors import TallformerError, TallformerWarning
from tallformer.version import __version__

_API = ("Detection", "Detector", "MemoryBank", "build_detector", "detect", "evaluate", "load_config",
        "load_model", "save_model")

__all__ = ["TallformerError", "TallformerWarning", "__version__", *_API]


def __getattr__(name: str) -> Any:
    """The API names, imported from their modules on first use (explicit imports, so that
    tests/test_layering.py sees them)."""
    value: Any
    if name == "load_config":
        from tallformer.config import load_config as value
    elif name == "build_detector":
        from tallformer.engine.factory import build_detector as value
    elif name == "save_model":
        from tallformer.engine.checkpoint import save_model as value
    elif name == "load_model":
        from tallformer.engine.checkpoint import load_model as value
    elif name == "detect":
        from tallformer.engine.infer import detect as value
    elif name == "Detector":
        from tallformer.engine.infer import Detector as value
    elif name == "Detection":
        from tallformer.engine.results import Detection as value
    elif name == "evaluate":
        from tallformer.evaluation import evaluate as value
    elif name == "MemoryBank":
        from tallformer.memory.bank import MemoryBank as value
    else:
        raise AttributeError(f"module 'tallformer' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
