"""tallformer: temporal action localization with a long-term memory bank (TALLFormer).

Importing the package is cheap: it pulls in neither torch nor numpy. Subpackages
(`tallformer.models`, `tallformer.memory`, `tallformer.data`) import torch on demand.
"""

__version__ = "0.1.0"
