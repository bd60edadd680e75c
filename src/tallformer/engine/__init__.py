"""Training and inference engines, on top of `models`, `memory`, `data` and `evaluation`.

The detector families: `family` (what a family provides: its inference path and test
options), `factory` (the one table ``model.kind`` -> family, `build_detector`), `families/`
(one module per family). Training: `train` (the loop, checkpoints, exact resume), `step`
(one memory-bank step), `loader`, `optim`, `schedule`, `journal`, `run_bank` (the bank a
run works on), `node_shards` (several nodes), `distributed` (DDP), `run_layout` (the run
folder and checkpoint formats), `checkpoint` (save / load, `save_model`, `load_model`).
Banks: `bank_build`, `bank_import`. Testing: `infer` (the public functions), `subset` (a
family's path over a subset, scored), `results` (records, results JSON, scoring), `stream`
(the decode thread), `model_import` (``tallformer convert-weights``). `device`, `errors`.
"""
