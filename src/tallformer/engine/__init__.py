"""Training and inference engines: the memory-bank training step (`engine.step`)."""
