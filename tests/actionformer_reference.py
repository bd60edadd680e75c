"""An independent re-statement of ActionFormer's computations, written from the release's
description (happyharrycn/actionformer_release: libs/modeling/{blocks,backbones,necks,
meta_archs,losses,loc_generators}.py, libs/utils/nms.py, libs/utils/csrc/nms_cpu.cpp), for
the tests to compare the package's modules against.

Deliberately written another way than the package: functional code on a state dict in the
release's key names; the local attention as dense T x T attention restricted to the band
|i - j| <= w (numerically the same as the release's chunked kernel); the mask downsampling
by nearest interpolation as the release calls it; label assignment, focal loss and NMS as
plain loops over points, ground truths and candidates, in float32 scalars where the
release's C++ is float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

State = Mapping[str, Tensor]


@dataclass
class Arch:
    """The model settings the reference needs (the release's names)."""

    num_classes: int
    backbone_arch: tuple[int, int, int] = (2, 2, 5)
    scale_factor: int = 2
    n_head: int = 4
    windows: Sequence[int] = (19,) * 6
    regression_range: Sequence[Sequence[float]] = ((0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000))
    embd_with_ln: bool = True
    fpn_with_ln: bool = True
    fpn_start_level: int = 0
    head_with_ln: bool = True
    use_abs_pe: bool = False
    use_rel_pe: bool = False
    max_seq_len: int = 576
    extra: dict = field(default_factory=dict)

    @property
    def fpn_strides(self) -> list[int]:
        return [self.scale_factor ** i for i in range(self.fpn_start_level, self.backbone_arch[2] + 1)]


# --------------------------------------------------------------------------- network


def layer_norm(x: Tensor, p: State, name: str) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * p[f"{name}.weight"] + p[f"{name}.bias"]


def masked_conv(x: Tensor, mask: Tensor, p: State, name: str, stride: int = 1, groups: int = 1) -> tuple[Tensor, Tensor]:
    weight = p[f"{name}.conv.weight"]
    bias = p.get(f"{name}.conv.bias")
    y = F.conv1d(x, weight, bias, stride=stride, padding=weight.shape[-1] // 2, groups=groups)
    if stride > 1:
        m = F.interpolate(mask.float(), size=x.shape[-1] // stride, mode="nearest").bool()
    else:
        m = mask
    return y * m.float(), m


def attention(x: Tensor, mask: Tensor, p: State, name: str, n_head: int, window: int, stride: int,
              use_rel_pe: bool) -> tuple[Tensor, Tensor]:
    c = x.shape[1]
    q, qm = masked_conv(x, mask, p, f"{name}.query_conv", stride, groups=c)
    k, km = masked_conv(x, mask, p, f"{name}.key_conv", stride, groups=c)
    v, _ = masked_conv(x, mask, p, f"{name}.value_conv", stride, groups=c)
    q = F.conv1d(layer_norm(q, p, f"{name}.query_norm"), p[f"{name}.query.weight"], p[f"{name}.query.bias"])
    k = F.conv1d(layer_norm(k, p, f"{name}.key_norm"), p[f"{name}.key.weight"], p[f"{name}.key.bias"])
    v = F.conv1d(layer_norm(v, p, f"{name}.value_norm"), p[f"{name}.value.weight"], p[f"{name}.value.bias"])
    b, _, t = q.shape
    hs = c // n_head
    q = q.reshape(b, n_head, hs, t).transpose(2, 3)
    k = k.reshape(b, n_head, hs, t).transpose(2, 3)
    v = v.reshape(b, n_head, hs, t).transpose(2, 3)
    scores = (q * (1.0 / math.sqrt(hs))) @ k.transpose(2, 3)  # [B, h, T, T]
    key_valid = km[:, 0][:, None, None, :]  # [B, 1, 1, T]
    if window > 1:
        w = window // 2
        i = torch.arange(t)[:, None]
        j = torch.arange(t)[None, :]
        band = (j - i).abs() <= w
        if use_rel_pe:
            rel = p[f"{name}.rel_pe"][0, 0]  # [h, window]
            scores = scores + rel[:, (j - i + w).clamp(0, 2 * w)] * band
        scores = scores + (~key_valid).float() * -1e4
        scores = scores.masked_fill(~band, float("-inf"))
        att = torch.softmax(scores, dim=-1)
        att = att * km[:, 0][:, None, :, None]  # rows of padded queries
        out = att @ v
    else:
        scores = scores.masked_fill(~key_valid, float("-inf"))
        att = torch.softmax(scores, dim=-1)
        out = att @ (v * km[:, 0][:, None, :, None])
    out = out.transpose(2, 3).reshape(b, c, t)
    out = F.conv1d(out, p[f"{name}.proj.weight"], p[f"{name}.proj.bias"])
    return out * qm.float(), qm


def block(x: Tensor, mask: Tensor, p: State, name: str, a: Arch, window: int, stride: int) -> tuple[Tensor, Tensor]:
    y, m = attention(layer_norm(x, p, f"{name}.ln1"), mask, p, f"{name}.attn", a.n_head, window, stride,
                     a.use_rel_pe)
    if f"{name}.drop_path_attn.scale" in p:
        y = y * p[f"{name}.drop_path_attn.scale"]
    skip = F.max_pool1d(x, stride + 1, stride, (stride + 1) // 2) if stride > 1 else x
    out = skip * m.float() + y
    h = F.conv1d(layer_norm(out, p, f"{name}.ln2"), p[f"{name}.mlp.0.weight"], p[f"{name}.mlp.0.bias"])
    h = F.conv1d(F.gelu(h), p[f"{name}.mlp.3.weight"], p[f"{name}.mlp.3.bias"]) * m.float()
    if f"{name}.drop_path_mlp.scale" in p:
        h = h * p[f"{name}.drop_path_mlp.scale"]
    return out + h, m


def sinusoids(n: int, d: int) -> Tensor:
    table = np.array([[pos / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for pos in range(n)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.FloatTensor(table).unsqueeze(0).transpose(1, 2)


def pad(feats: Tensor, length: int, a: Arch, training: bool) -> tuple[Tensor, Tensor]:
    """One sample `[C, T]` -> `[1, C, P]`, mask `[1, 1, P]` (meta_archs.py:389-427)."""
    factor = max(s * (w // 2) * 2 if w > 1 else s for s, w in zip(a.fpn_strides, a.windows, strict=False))
    if training or length <= a.max_seq_len:
        size = a.max_seq_len
    else:
        size = math.ceil(length / factor) * factor
    x = torch.zeros(1, feats.shape[0], size)
    x[0, :, :length] = feats[:, :length]
    return x, (torch.arange(size) < length)[None, None, :]


def network(p: State, a: Arch, x: Tensor, mask: Tensor, training: bool = False) -> dict[str, list[Tensor]]:
    """Per level (sample 0): `cls [T_l, K]`, `off [T_l, 2]`, `mask [T_l]`, `points [T_l, 4]`."""
    n_embd = sum(1 for k in p if k.startswith("backbone.embd.") and k.endswith(".conv.weight"))
    for i in range(n_embd):
        x, mask = masked_conv(x, mask, p, f"backbone.embd.{i}")
        if a.embd_with_ln:
            x = layer_norm(x, p, f"backbone.embd_norm.{i}")
        x = torch.relu(x)
    if a.use_abs_pe:
        c, t = x.shape[1], x.shape[2]
        pe = sinusoids(a.max_seq_len, c) / c ** 0.5
        if not training and t >= a.max_seq_len:
            pe = F.interpolate(pe, t, mode="linear", align_corners=False)
        x = x + pe[:, :, :t] * mask.float()
    feats, masks = [], []
    for i in range(a.backbone_arch[1]):
        x, mask = block(x, mask, p, f"backbone.stem.{i}", a, a.windows[0], 1)
    feats.append(x)
    masks.append(mask)
    for i in range(a.backbone_arch[2]):
        x, mask = block(x, mask, p, f"backbone.branch.{i}", a, a.windows[i + 1], a.scale_factor)
        feats.append(x)
        masks.append(mask)
    feats, masks = feats[a.fpn_start_level:], masks[a.fpn_start_level:]
    if a.fpn_with_ln:
        feats = [layer_norm(f, p, f"neck.fpn_norms.{i}") for i, f in enumerate(feats)]
    n_head_layers = sum(1 for k in p if k.startswith("cls_head.head.") and k.endswith(".conv.weight"))
    out: dict[str, list[Tensor]] = {"cls": [], "off": [], "mask": [], "points": []}
    for level, (f, m) in enumerate(zip(feats, masks, strict=True)):
        h_cls, h_reg = f, f
        for i in range(n_head_layers):
            h_cls, _ = masked_conv(h_cls, m, p, f"cls_head.head.{i}")
            h_reg, _ = masked_conv(h_reg, m, p, f"reg_head.head.{i}")
            if a.head_with_ln:
                h_cls = layer_norm(h_cls, p, f"cls_head.norm.{i}")
                h_reg = layer_norm(h_reg, p, f"reg_head.norm.{i}")
            h_cls, h_reg = torch.relu(h_cls), torch.relu(h_reg)
        logits, _ = masked_conv(h_cls, m, p, "cls_head.cls_head")
        offsets, _ = masked_conv(h_reg, m, p, "reg_head.offset_head")
        offsets = torch.relu(offsets * p[f"reg_head.scale.{level}.scale"])
        stride = a.fpn_strides[level]
        t = f.shape[-1]
        lo, hi = a.regression_range[level]
        points = torch.tensor([[float(stride * n), float(lo), float(hi), float(stride)] for n in range(t)])
        out["cls"].append(logits[0].t())
        out["off"].append(offsets[0].t())
        out["mask"].append(m[0, 0])
        out["points"].append(points)
    return out


# --------------------------------------------------------------------------- targets and losses


def label_points(points: Tensor, gts: Tensor, labels: Tensor, num_classes: int, radius: float | None) -> tuple[Tensor, Tensor]:
    """Loops over points and ground truths (meta_archs.py:448-532); radius None = "none"."""
    f32 = np.float32
    n = points.shape[0]
    cls = torch.zeros(n, num_classes)
    reg = torch.zeros(n, 2)
    pts = points.numpy().astype(np.float32)
    segs = gts.numpy().astype(np.float32)
    for i in range(n):
        t, lo, hi, s = (f32(v) for v in pts[i])
        lengths = []
        for g in range(segs.shape[0]):
            a, b = f32(segs[g, 0]), f32(segs[g, 1])
            dl, dr = f32(t - a), f32(b - t)
            if radius is None:
                inside = min(dl, dr) > 0
            else:
                c = f32(f32(0.5) * f32(a + b))
                left = f32(t - max(f32(c - f32(s * f32(radius))), a))
                right = f32(min(f32(c + f32(s * f32(radius))), b) - t)
                inside = min(left, right) > 0
            in_range = lo <= max(dl, dr) <= hi
            lengths.append(f32(b - a) if inside and in_range else f32(np.inf))
        best = min(lengths)
        if best == np.inf:
            continue
        first = lengths.index(best)
        for g, length in enumerate(lengths):
            if length < np.inf and length <= f32(best + f32(1e-3)):
                cls[i, int(labels[g])] = 1.0
        reg[i, 0] = float(f32(t - segs[first, 0]) / s)
        reg[i, 1] = float(f32(segs[first, 1] - t) / s)
    return cls, reg


def focal_sum(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> float:
    """Sigmoid focal loss summed, in float64 from the definition (losses.py:4-51)."""
    x, y = logits.detach().double(), targets.double()
    p = torch.sigmoid(x)
    ce = torch.clamp(x, min=0) - x * y + torch.log1p(torch.exp(-x.abs()))
    p_t = p * y + (1 - p) * (1 - y)
    a_t = alpha * y + (1 - alpha) * (1 - y)
    return float((a_t * ce * (1 - p_t) ** gamma).sum())


def diou(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = pred.detach().double(), target.double()
    lp, rp, lg, rg = pred[:, 0], pred[:, 1], target[:, 0], target[:, 1]
    inter = torch.minimum(lp, lg) + torch.minimum(rp, rg)
    union = lp + rp + lg + rg - inter
    iou = inter / union.clamp(min=1e-8)
    rho = (rp - lp - rg + lg) / 2
    return 1 - iou + (rho / (torch.maximum(lp, lg) + torch.maximum(rp, rg)).clamp(min=1e-8)) ** 2


def losses(outs: Sequence[dict[str, list[Tensor]]], gts: Sequence[Tensor], labels: Sequence[Tensor], num_classes: int,
           normalizer: float, radius: float | None = 1.5, label_smoothing: float = 0.0,
           loss_weight: float = 1.0) -> tuple[dict[str, float], float]:
    """(losses, new normaliser) of B samples (meta_archs.py:534-595)."""
    cls_l, reg_l, pos = 0.0, 0.0, 0
    logit_rows, target_rows, pred_pos, gt_pos = [], [], [], []
    for out, g, lab in zip(outs, gts, labels, strict=True):
        points = torch.cat(out["points"])
        tc, tr = label_points(points, g, lab, num_classes, radius)
        valid = torch.cat(out["mask"])
        logits = torch.cat(out["cls"])
        offsets = torch.cat(out["off"])
        for i in range(points.shape[0]):
            if not valid[i]:
                continue
            logit_rows.append(logits[i])
            target_rows.append(tc[i])
            if tc[i].sum() > 0:
                pos += 1
                pred_pos.append(offsets[i])
                gt_pos.append(tr[i])
    norm = 0.9 * normalizer + (1 - 0.9) * max(pos, 1)
    targets = torch.stack(target_rows) * (1 - label_smoothing) + label_smoothing / (num_classes + 1)
    cls_l = focal_sum(torch.stack(logit_rows), targets) / norm
    if pos:
        reg_l = float(diou(torch.stack(pred_pos), torch.stack(gt_pos)).sum()) / norm
    weight = loss_weight if loss_weight > 0 else cls_l / max(reg_l, 0.01)
    return {"loss_cls": cls_l, "loss_reg": reg_l, "loss": cls_l + reg_l * weight}, norm


# --------------------------------------------------------------------------- inference


def candidates(out: dict[str, list[Tensor]], thresh: float, topk: int, min_len: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per level: sigmoid x mask, > thresh, best topk, decode, length > min_len (meta_archs.py:658-703)."""
    segs, scores, labels = [], [], []
    for cls, off, m, pts in zip(out["cls"], out["off"], out["mask"], out["points"], strict=True):
        k = cls.shape[1]
        prob = torch.sigmoid(cls) * m[:, None].float()
        flat = [(float(prob[t, c]), t * k + c) for t in range(cls.shape[0]) for c in range(k)
                if prob[t, c] > thresh]
        flat.sort(key=lambda e: (-e[0], e[1]))
        for score, idx in flat[:topk]:
            t, c = divmod(idx, k)
            left = pts[t, 0] - off[t, 0] * pts[t, 3]
            right = pts[t, 0] + off[t, 1] * pts[t, 3]
            if right - left > min_len:
                segs.append(torch.stack([left, right]))
                scores.append(score)
                labels.append(c)
    if not segs:
        return torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    return torch.stack(segs), torch.tensor(scores, dtype=torch.float32), torch.tensor(labels)


def soft_nms(segs: Tensor, scores: Tensor, sigma: float, min_score: float) -> tuple[list[tuple[float, float, float]], list[int]]:
    """nms_cpu.cpp:67-160 (method 2) line by line, in float32 scalars."""
    f32 = np.float32
    x1 = [f32(v) for v in segs[:, 0].tolist()]
    x2 = [f32(v) for v in segs[:, 1].tolist()]
    sc = [f32(v) for v in scores.tolist()]
    area = [f32(b - a) + f32(1e-6) for a, b in zip(x1, x2, strict=True)]
    inds = list(range(len(sc)))
    n = len(sc)
    dets, out = [], []
    i = 0
    while i < n:
        best, pos = sc[i], i
        for q in range(i + 1, n):
            if best < sc[q]:
                best, pos = sc[q], q
        dets.append((x1[pos], x2[pos], sc[pos]))
        for arr in (x1, x2, sc, area, inds):
            arr[i], arr[pos] = arr[pos], arr[i]
        out.append(inds[i])
        q = i + 1
        while q < n:
            inter = max(f32(0), f32(min(x2[i], x2[q]) - max(x1[i], x1[q])))
            ovr = f32(inter / f32(f32(area[i] + area[q]) - inter))
            sc[q] = f32(sc[q] * f32(np.exp(f32(-f32(ovr * ovr) / f32(sigma)))))
            if sc[q] < f32(min_score):
                for arr in (x1, x2, sc, area, inds):
                    arr[q] = arr[n - 1]
                n -= 1
                q -= 1
            q += 1
        i += 1
    return dets, out


def hard_nms(segs: Tensor, scores: Tensor, iou_threshold: float) -> list[int]:
    """nms_cpu.cpp:19-58."""
    f32 = np.float32
    order = torch.sort(scores, descending=True).indices.tolist()
    x1 = [f32(v) for v in segs[:, 0].tolist()]
    x2 = [f32(v) for v in segs[:, 1].tolist()]
    area = [f32(b - a) + f32(1e-6) for a, b in zip(x1, x2, strict=True)]
    alive = [True] * len(order)
    for a_ in range(len(order)):
        if not alive[a_]:
            continue
        i = order[a_]
        for b_ in range(a_ + 1, len(order)):
            j = order[b_]
            inter = max(f32(0), f32(min(x2[i], x2[j]) - max(x1[i], x1[j])))
            if f32(inter / f32(f32(area[i] + area[j]) - inter)) >= f32(iou_threshold):
                alive[b_] = False
    return [order[a_] for a_ in range(len(order)) if alive[a_]]


def batched(segs: Tensor, scores: Tensor, labels: Tensor, iou: float, min_score: float, max_num: int, soft: bool,
            multiclass: bool, sigma: float, voting: float) -> tuple[Tensor, Tensor, Tensor]:
    """nms.py:103-190."""
    if segs.shape[0] == 0:
        return torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.int64)

    def run(s: Tensor, p: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if soft:
            dets, idx = soft_nms(s, p, sigma, min_score)
            dets, idx = dets[:max_num], idx[:max_num]
            return (torch.tensor([[d[0], d[1]] for d in dets]).reshape(-1, 2),
                    torch.tensor([d[2] for d in dets], dtype=torch.float32), c[idx])
        if min_score > 0:
            keep = p > min_score
            s, p, c = s[keep], p[keep], c[keep]
        idx = hard_nms(s, p, iou)[:max_num]
        return s[idx], p[idx], c[idx]

    if multiclass:
        parts = [run(segs[labels == k], scores[labels == k], labels[labels == k])
                 for k in sorted(set(labels.tolist()))]
        new_segs = torch.cat([q[0] for q in parts])
        new_scores = torch.cat([q[1] for q in parts])
        new_labels = torch.cat([q[2] for q in parts])
    else:
        new_segs, new_scores, new_labels = run(segs, scores, labels)
        if voting > 0:
            voted = []
            for a, b in new_segs.tolist():
                num, den = torch.zeros(2, dtype=torch.float64), 0.0
                for (c, d), w in zip(segs.tolist(), scores.tolist(), strict=True):
                    inter = max(0.0, min(b, d) - max(a, c))
                    ov = inter / ((b - a) + (d - c) - inter)
                    if ov >= voting:
                        num += w * ov * torch.tensor([c, d], dtype=torch.float64)
                        den += w * ov
                voted.append((num / den).float())
            new_segs = torch.stack(voted) if voted else new_segs
    order = torch.sort(new_scores, descending=True).indices[:max_num]
    return new_segs[order], new_scores[order], new_labels[order]


def to_seconds(segs: Tensor, feat_stride: int, num_frames: int, fps: float, duration: float) -> Tensor:
    out = segs.clone()
    for i in range(out.shape[0]):
        for j in range(2):
            v = (float(out[i, j]) * feat_stride + 0.5 * num_frames) / fps
            out[i, j] = -0.0 if v < 0 else (0.0 if v == 0 else min(v, duration))
    return out


# --------------------------------------------------------------------------- test support


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random (LayerNorm biases, drop-path scales and Scales too, so padded
    steps carry non-zero values and every learned factor matters)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("drop_path_attn.scale", "drop_path_mlp.scale")) or p.dim() == 0:
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif name.endswith(".weight") and p.dim() == 3 and p.shape[0] == 1:  # LayerNorm [1, C, 1]
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread while a test of these tiny networks runs (on a busy machine the
    thread pool costs ten times the arithmetic); the count is restored after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
