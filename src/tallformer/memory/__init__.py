"""The long-term memory bank: storage (`bank`) and the choice of the chunks that go through
the backbone (`selection`). Building a bank is `tallformer.engine.bank_build`.

Importing this package does not import torch. It imports neither `models` nor `data`.
"""

from tallformer.memory.bank import BankError, MemoryBank
from tallformer.memory.selection import (
    ChunkSelector,
    make_chunk_selector,
    num_kept,
    select_chunks,
)

__all__ = ["BankError", "ChunkSelector", "MemoryBank", "make_chunk_selector", "num_kept", "select_chunks"]
