"""Training and inference engines, on top of `models`, `memory`, `data` and `evaluation`.

`step` (one memory-bank training step), `loader` (the training data pipeline), `optim`,
`device`, `distributed` (DDP), `bank_build` (fill a bank with the backbone), `run_bank`
(the bank a training run works on), `infer` (inference over whole videos).
"""
