"""Record the numbers tallformer computes on fixed inputs, to show a change keeps them.

Backbone features (tiny and Swin-B), neck outputs, head outputs and losses (also with
ignore regions), per-window predictions and the per-video merge, the evaluator on the
real THUMOS14 test annotations with jittered predictions, test windows, a bank build on
synthetic videos, and two training steps (no augmentation) with their bank writes. It
runs against whichever `tallformer` Python imports, so an older tree can be recorded too:

    git worktree add /tmp/old 7b8524a
    PYTHONPATH=/tmp/old/src python scripts/fingerprint.py before.pt /tmp/fp_before
    python scripts/fingerprint.py after.pt /tmp/fp_after
    python scripts/fingerprint.py --compare before.pt after.pt

usage: python scripts/fingerprint.py OUT.pt WORKDIR [REFERENCE_DATA]
       python scripts/fingerprint.py --compare A.pt B.pt
"""
import copy
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch


def _equal(x, y) -> bool:
    import torch

    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    if isinstance(x, (list, tuple)):
        return isinstance(y, (list, tuple)) and len(x) == len(y) and all(_equal(i, j) for i, j in zip(x, y, strict=True))
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    return x == y


if sys.argv[1] == "--compare":
    import torch

    a, b = (torch.load(p, weights_only=False) for p in sys.argv[2:4])
    bad = [k for k in a if not _equal(a[k], b.get(k))]
    print(f"{len(a)} records; differ: {', '.join(bad) or 'none'}")
    sys.exit(0)

out_path, work = Path(sys.argv[1]), Path(sys.argv[2])
REFERENCE = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).resolve().parents[2] / "shared" / "reference" / "data"
work.mkdir(parents=True, exist_ok=True)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)
rec: dict = {}

from tallformer.config import load_config  # noqa: E402

try:
    from tallformer.config import resolve_config_path  # type: ignore
    demo_path = resolve_config_path("demo")
except Exception:
    import tallformer

    demo_path = str(Path(tallformer.__file__).resolve().parents[2] / "configs" / "demo.yaml")
from tallformer.models.backbone import build_backbone_from_config  # noqa: E402

try:  # the factory table (engine), or the older models.detector
    from tallformer.engine.factory import build_detector  # type: ignore
except Exception:
    from tallformer.models.detector import build_detector  # type: ignore

try:
    from tallformer.models.postprocess import merge_video_detections  # type: ignore
except Exception:
    try:
        from tallformer.engine.infer import merge_video_detections  # type: ignore
    except Exception:
        from tallformer.models.anchor_head import merge_video_detections  # type: ignore

cfg = load_config(demo_path)

# backbone (tiny and swin_b on a small clip)
for arch in ("tiny", "swin_b"):
    bc = copy.deepcopy(cfg.model.backbone)
    bc.arch = arch
    torch.manual_seed(0)
    bb = build_backbone_from_config(bc).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 64, 64, 64, generator=g)
    with torch.no_grad():
        rec[f"backbone_{arch}"] = bb(x)

# detector: neck, head outputs, losses, predict + merge
torch.manual_seed(0)
model = build_detector(cfg)
g = torch.Generator().manual_seed(2)
clip = torch.randn(2, 3, 128, 56, 56, generator=g)
model.eval()
with torch.no_grad():
    feats = model.backbone(clip)
    neck = model.neck(feats)
    rec["neck"] = neck
    cls, reg = model.head(neck)
    rec["head_cls"], rec["head_reg"] = cls, reg
model.train()
torch.manual_seed(3)
keep = torch.zeros(2, 4, dtype=torch.bool)
keep[:, [0, 2]] = True
chunks = clip.reshape(2, 3, 4, 32, 56, 56).transpose(1, 2)[keep]
cached = torch.randn(2, 2, 192, 16, generator=g).half()
outs, fresh = model.forward_train(chunks, cached, keep)
segs = [torch.tensor([[10.0, 40.0], [50.0, 100.0]]), torch.tensor([[0.0, 127.0]])]
labels = [torch.tensor([0, 2]), torch.tensor([3])]
ignore = [torch.tensor([[60.0, 90.0]]), torch.zeros(0, 2)]
losses = model.loss(outs, segs, labels, ignore)
rec["losses"] = {k: v.detach() for k, v in losses.items()}
hk = model.head
import dataclasses as _dc  # noqa: E402

for thr in (0.5, 0.0):
    crit = getattr(hk, "criterion", None)
    if crit is not None:  # new layout: the matcher holds the threshold
        old_m = crit.matcher
        crit.matcher = _dc.replace(old_m, ignore_iof_thr=thr)
    else:
        old_t = hk.ignore_iof_thr
        hk.ignore_iof_thr = thr
    l2 = model.loss(outs, segs, labels, ignore)
    rec[f"losses_ignore_{thr}"] = {k: v.detach() for k, v in l2.items()}
    if crit is not None:
        crit.matcher = old_m
    else:
        hk.ignore_iof_thr = old_t
model.eval()
with torch.no_grad():
    head_out = model.forward_infer(clip)
dets = model.predict(head_out, [128, 100], [0, 96])
rec["predict"] = [(d.segments, d.scores, d.labels) for d in dets]
m = merge_video_detections(dets, 15.0, method="nmw", iou_threshold=0.5, max_per_video=1200)
rec["merge"] = (m.segments, m.scores, m.labels)

# evaluator on real THUMOS14 annotations, jittered predictions
from tallformer.evaluation import evaluate  # noqa: E402

ref = REFERENCE / "thumos14"
try:
    from tallformer.data.importers.thumos14 import import_thumos14  # type: ignore
except Exception:
    import_thumos14 = None
gtfile = work / "th14.json"
if not gtfile.exists():
    import subprocess
    subprocess.run([sys.executable, "-m", "tallformer", "prepare", "thumos14", "--annotations", str(ref),
                    "--video-info", str(ref / "TH14_video_info.json"), "--out", str(gtfile)], check=True)
gt = json.loads(gtfile.read_text())
rng = np.random.default_rng(0)
res = {}
for vid, v in gt["database"].items():
    if v["subset"] != "test":
        continue
    lst = []
    for a in v["annotations"]:
        s, e = a["segment"]
        for _ in range(2):
            j = rng.normal(0, 1.0, 2)
            a0, a1 = sorted((s + j[0], e + j[1]))
            lst.append({"segment": [a0, a1], "label": a["label"], "score": float(rng.random())})
    res[vid] = lst
r = evaluate(gtfile, {"results": res}, [0.3, 0.4, 0.5, 0.6, 0.7], subset="test")
rec["eval"] = (r["mAP"], r["average_mAP"], sorted(r["per_class_AP"].items()))

# windows
from tallformer.data import windows as W  # noqa: E402

rec["test_windows"] = [W.test_windows(n, 480, 0.25) for n in (100, 480, 1000, 4321)]

# bank build on synthetic data
syn = work / "syn"
try:
    from tallformer.data.synthetic import generate_synthetic_dataset
    if not (syn / "annotations.json").exists():
        generate_synthetic_dataset(syn, 4, 0, progress=False, min_length=12, max_length=20)
except Exception as e:
    print("synthetic", e)
try:
    from tallformer.engine.bank_build import build_bank  # type: ignore
except Exception:
    from tallformer.memory.build import build_bank  # type: ignore
bcfg = copy.deepcopy(cfg)
bcfg.data.annotations = str(syn / "annotations.json")
bcfg.data.videos = str(syn / "videos")
bdir = work / "bank_out"
import shutil  # noqa: E402

shutil.rmtree(bdir, ignore_errors=True)
build_bank(bcfg, bdir, progress=False)
bank_hash = {}
for f in sorted(bdir.rglob("*.npy")):
    bank_hash[f.name] = hashlib.sha256(np.load(f).tobytes()).hexdigest()
rec["bank"] = bank_hash

# two training steps (no augmentation: the colour formulas change on purpose)
try:
    from tallformer.engine.loader import make_train_loader  # type: ignore
except Exception:
    from tallformer.engine.step import make_train_loader  # type: ignore
from tallformer.engine.step import train_step  # noqa: E402

try:
    from tallformer.engine.step import make_optimizer  # type: ignore
except Exception:
    from tallformer.engine.optim import make_optimizer  # type: ignore
from tallformer.data.annotations import load_annotations  # noqa: E402
from tallformer.memory.bank import MemoryBank  # noqa: E402

tcfg = copy.deepcopy(bcfg)
tcfg.data.augment = False
tcfg.data.num_workers = 0
tcfg.data.batch_size = 1
ann = load_annotations(tcfg.data.annotations)
bank = MemoryBank.open(bdir, "r+")
torch.manual_seed(0)
tm = build_detector(tcfg)
opt = make_optimizer(tm, tcfg.train)
loader = make_train_loader(tcfg, ann, bank)
loader.set_epoch(0)
step_losses = []
for i, batch in enumerate(loader):
    step_losses.append(train_step(tm, batch, opt, bank, device="cpu"))
    if i == 1:
        break
rec["train_losses"] = step_losses
rec["train_weights"] = hashlib.sha256(b"".join(v.numpy().tobytes() for v in tm.state_dict().values())).hexdigest()
bank.flush()
rec["bank_after"] = {f.name: hashlib.sha256(np.load(f).tobytes()).hexdigest() for f in sorted(bdir.rglob("*.npy"))}

torch.save(rec, out_path)
print("saved", out_path, list(rec))
