"""The long-term memory bank: storage, chunk selection, building."""
