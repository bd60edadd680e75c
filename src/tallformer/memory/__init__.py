"""The long-term memory bank: storage, chunk selection, building.

Importing this package does not import torch.
"""

from tallformer.memory.bank import BankError, MemoryBank
from tallformer.memory.selection import (
    make_chunk_selector,
    num_kept,
    sample_generator,
    select_chunks,
)

__all__ = ["BankError", "MemoryBank", "make_chunk_selector", "num_kept", "sample_generator", "select_chunks"]
