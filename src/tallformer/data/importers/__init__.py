"""Dataset importers: a dataset's own annotation files -> one `AnnotationSet`.

- `import_thumos14` (`thumos14.py`): THUMOS14's per-class txt files.
- `import_activitynet` (`activitynet.py`): ActivityNet-1.3, the official JSON or BSN's.

Save the result with `tallformer.data.annotations.save_annotations`. Standard library only
(reading durations from videos imports PyAV when asked for).
"""

from tallformer.data.importers.activitynet import (
    ACTIVITYNET_NUM_CLASSES,
    ACTIVITYNET_SUBSETS,
    import_activitynet,
)
from tallformer.data.importers.thumos14 import (
    THUMOS14_CLASSES,
    THUMOS14_MISLABELLED,
    import_thumos14,
)

__all__ = [
    "ACTIVITYNET_NUM_CLASSES",
    "ACTIVITYNET_SUBSETS",
    "THUMOS14_CLASSES",
    "THUMOS14_MISLABELLED",
    "import_activitynet",
    "import_thumos14",
]
