"""`tallformer train` as torchrun starts it (``python -m tallformer train ...``), with a probe.

``torchrun --nproc_per_node 1 benchmarks/gpu_check/train_entry.py train --config ...`` runs
exactly `tallformer.cli.main`; with ``GPU_CHECK_PROBE=FILE`` it also writes, when the engine
wraps the detector in DDP (`tallformer.engine.distributed.wrap_ddp`), what the run got:
the process group's backend and size, how many SyncBatchNorm and plain BatchNorm modules
the detector has, the device, and whether deterministic algorithms are on. Without DDP
(one process and no process group) nothing is written, which the part reports.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from tallformer.cli import main
from tallformer.engine import train as engine_train

_real_wrap_ddp = engine_train.wrap_ddp


def _probed_wrap_ddp(model: Any, *args: Any, **kwargs: Any) -> Any:
    import torch

    wrapped = _real_wrap_ddp(model, *args, **kwargs)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    info = {
        "ddp": True,
        "backend": str(torch.distributed.get_backend()),
        "world_size": torch.distributed.get_world_size(),
        "sync_batchnorm_modules": sum(isinstance(m, torch.nn.SyncBatchNorm) for m in batch_norms),
        "plain_batchnorm_modules": sum(not isinstance(m, torch.nn.SyncBatchNorm) for m in batch_norms),
        "device": str(next(model.parameters()).device),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    with open(os.environ["GPU_CHECK_PROBE"], "w") as f:
        json.dump(info, f)
    return wrapped


if os.environ.get("GPU_CHECK_PROBE"):
    engine_train.wrap_ddp = _probed_wrap_ddp

if __name__ == "__main__":
    sys.exit(main())
