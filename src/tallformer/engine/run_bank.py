"""The bank a training run works on: validated, copied into the run directory, recorded.

The original edits the user's bank in place and its README tells users to copy it by hand
before every run (the bank path of configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:178-179
is the copy; vedatad/engines/train_engine.py:121-139 writes into it). Here a run validates the bank against
its training videos and config before any step, then trains on its own copy in
`RUN_DIR/bank/` (made once, atomically, and reused on resume), and records in
`RUN_DIR/bank.json` which bank it started from (path and meta fingerprint). With
`memory.in_place: true` (`--bank-in-place`) it trains on the user's bank directly.

Several nodes with `memory.placement: node_local` (docs/cluster.md): each node works in its
own node folder (`memory.node_dir`, on its local disk) on a shard of the bank that holds
only the videos it owns::

    NODE_DIR/shard.json    which shard this folder holds (node, nodes, seed, videos, bank)
    NODE_DIR/bank/         the shard (a copy of the user's bank's videos, or built here)
    NODE_DIR/bank.json     the bank the shard was copied from (as RUN_DIR/bank.json)
    NODE_DIR/journal/      the shard's undo journal since the last checkpoint

`open_run_bank` is what `tallformer.engine.train` opens at its start (one function for both
placements: copied from ``memory.bank_dir``, or built from the initial backbone);
`merge_node_banks` (`tallformer bank merge`) puts the shards back into one bank.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tallformer.atomic import write_json, write_text
from tallformer.config import Config
from tallformer.data.annotations import AnnotationSet
from tallformer.engine.run_layout import (
    BANK_DIR,
    BANK_RECORD,
    CHECKPOINTS,
    JOURNAL,
    LAST,
    SHARD_RECORD,
)
from tallformer.errors import TallformerError, TallformerWarning, name_list
from tallformer.memory.bank import BankError, MemoryBank
from tallformer.memory.selection import num_kept

if TYPE_CHECKING:
    from tallformer.engine.distributed import Processes
    from tallformer.models.protocol import DetectorModel

__all__ = [
    "bank_complete", "claim_shards", "complete_videos", "merge_node_banks", "needs_bank", "node_path", "open_run_bank", "open_training_bank",
    "read_shard", "shard_bank_path", "training_frame_counts", "write_shard",
]

SHARD_FORMAT = "tallformer-node-shard"


def training_frame_counts(cfg: Config, annotations: AnnotationSet) -> dict[str, int]:
    """`{video_id: frames}` of the training subset, decoded at the rate the dataset uses
    (the annotation's own fps when it has one, else data.fps), from the videos themselves."""
    from tallformer.data.annotations import video_fps
    from tallformer.data.video import open_source, resolve_video

    if cfg.data.videos is None:
        raise BankError("data.videos is not set: the bank is checked against the training videos")
    counts: dict[str, int] = {}
    size = (cfg.data.frame_size[0], cfg.data.frame_size[1])
    for video in annotations.subset(cfg.data.train_subset):
        path = resolve_video(cfg.data.videos, video.video_id)
        src = open_source(path, video_fps(video, cfg.data), size)
        try:
            counts[video.video_id] = len(src)
        finally:
            src.close()
    return counts


def open_training_bank(
    cfg: Config,
    run_dir: str | os.PathLike[str],
    frame_counts: dict[str, int],
    feature_dim: int,
    *,
    videos: Collection[str] | None = None,
    bank_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> MemoryBank:
    """Validate `memory.bank_dir` and return the bank this run trains on (mode "r+").

    Args:
        frame_counts: `{video_id: frames}` of every training video (see
            `training_frame_counts`); each must be in the bank with matching rows.
        feature_dim: the backbone's output channels C.
        videos: a node's shard (node-local placement): only these videos are copied into
            ``run_dir/bank`` (``frame_counts`` then holds only them); None: all.
        bank_dir: the user's bank (default ``memory.bank_dir``; a node passes it with
            ``{node}`` replaced).
        progress: a progress bar while copying.
    Raises:
        BankError naming the bank, the video and the numbers on any mismatch, or when a
        resumed run finds a different bank than the one it started from.
    """
    if cfg.memory.bank_dir is None:
        raise BankError(
            "memory.bank_dir is not set; build a bank with 'tallformer bank build --config ... "
            "--out DIR' and pass memory.bank_dir=DIR"
        )
    user_bank = str(bank_dir) if bank_dir is not None else cfg.memory.bank_dir
    source = MemoryBank.open(user_bank, mode="r", videos=frame_counts,
                             feature_dim=feature_dim, dtype=cfg.memory.dtype, fps=cfg.data.fps)
    if not _same_file(source.weights, cfg.model.backbone.weights):
        # cached features of another network would silently disagree with the fresh ones
        warnings.warn(
            f"{user_bank}: the bank was built from backbone weights {source.weights} "
            f"but model.backbone.weights is {cfg.model.backbone.weights}; rebuild the bank "
            "with 'tallformer bank build --weights ...' if they are not the same network",
            TallformerWarning,
            stacklevel=2,
        )
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    record_path = run / BANK_RECORD
    record: dict[str, Any] = {
        "source": str(Path(user_bank).resolve()),
        "fingerprint": source.fingerprint(),
        "in_place": bool(cfg.memory.in_place),
    }
    if record_path.is_file():
        try:
            previous = json.loads(record_path.read_text())
        except (OSError, ValueError) as e:
            raise BankError(f"{record_path}: cannot read this run's bank record ({e}); "
                            "use a new run_dir") from None
        if previous.get("fingerprint") != record["fingerprint"] or previous.get("in_place") != record["in_place"]:
            raise BankError(
                f"{run}: this run started from bank {previous.get('source')} (fingerprint "
                f"{str(previous.get('fingerprint'))[:12]}, in_place={previous.get('in_place')}) but now "
                f"memory.bank_dir={user_bank} (fingerprint {record['fingerprint'][:12]}, "
                f"in_place={record['in_place']}); resume with the same bank or use a new run_dir"
            )
    if cfg.memory.in_place:
        bank = MemoryBank.open(user_bank, mode="r+")
        record["path"] = record["source"]
    else:
        bank = source.copy_to(run / BANK_DIR, mode="r+", videos=videos, progress=progress)
        record["path"] = str((run / BANK_DIR).resolve())
    source.close()
    write_text(record_path, json.dumps(record, indent=2))  # no trailing newline, as before
    return bank


def complete_videos(root: Path, counts: dict[str, int]) -> int:
    """How many videos of `counts` the bank at `root` holds finished (0: no bank there)."""
    if not (root / "meta.json").is_file():
        return 0
    bank = MemoryBank.open(root, mode="r")
    try:
        return sum(1 for v in counts if v in bank and bank.is_complete(v))
    finally:
        bank.close()


def bank_complete(root: Path, counts: dict[str, int]) -> bool:
    """Whether `root` holds a bank with every video of `counts` finished."""
    return (root / "meta.json").is_file() and complete_videos(root, counts) == len(counts)


def needs_bank(cfg: Config) -> bool:
    """Whether a run of `cfg` has a bank: False when every chunk goes through the backbone."""
    chunks = cfg.data.num_frames // cfg.model.backbone.chunk_size
    return num_kept(chunks, cfg.memory.keep_ratio) < chunks


def open_run_bank(cfg: Config, folder: Path, model: DetectorModel, counts: dict[str, int], procs: Processes,
                  *, node_local: bool = False, progress: bool = True) -> MemoryBank | None:
    """The bank a run trains on, opened "r+" on every rank (None when every chunk goes
    through the backbone: keep ratio 1).

    `folder` is ``RUN_DIR`` (or, node-local, this node's folder, `counts` then holding only
    its own videos). With ``memory.bank_dir`` (``{node}`` replaced for a node) the bank is
    validated and copied there (`open_training_bank`); without one, it is built in
    ``FOLDER/bank`` from the initial backbone ``model.backbone``, unless complete there
    already. The first process (of the run, or of the node) does the work; an error on it
    is raised on every rank.
    """
    from tallformer.engine.bank_build import build_bank

    if not needs_bank(cfg):
        return None
    dim = model.backbone.num_features
    first = procs.local_main if node_local else procs.main
    videos = list(counts) if node_local else None
    error: str | None = None
    if cfg.memory.bank_dir is not None:
        source = node_path(cfg.memory.bank_dir, procs.node_rank) if node_local else None
        if first:
            try:
                open_training_bank(cfg, folder, counts, dim, videos=videos, bank_dir=source,
                                   progress=progress).close()
            except TallformerError as exc:
                error = str(exc)
        procs.raise_together(error)
        return open_training_bank(cfg, folder, counts, dim, videos=videos, bank_dir=source, progress=False)
    own = folder / BANK_DIR
    if first and not bank_complete(own, counts):
        if node_local:
            print(f"node {procs.node}: building its memory bank shard ({len(counts)} videos) in {own} "
                  "from the initial backbone")
        else:
            print(f"building the memory bank in {own} from the initial backbone")
        report = build_bank(cfg, own, weights=cfg.model.backbone.weights, device=procs.device,
                            videos=videos, backbone=model.backbone, progress=progress)
        if not report.ok:
            error = f"memory bank build in {own} failed: {report.summary()}"
    procs.raise_together(error)
    return MemoryBank.open(own, mode="r+", videos=counts, feature_dim=dim, dtype=cfg.memory.dtype,
                           fps=cfg.data.fps)


def _same_file(a: str | None, b: str | None) -> bool:
    """Two spellings of one weights file (or both unset): ``./x.pth`` and its absolute path
    are the same file."""
    if a is None or b is None or a == b:
        return a == b
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


# --------------------------------------------------------------------------- node shards


def node_path(template: str, node_rank: int) -> Path:
    """A node's folder: ``template`` with ``{node}`` replaced by the node rank."""
    return Path(template.replace("{node}", str(int(node_rank))))


def shard_record(node: int, nodes: Sequence[Sequence[str]], seed: int, bank: str,
                 fingerprint: str | None = None) -> dict[str, Any]:
    """What ``NODE_DIR/shard.json`` holds: this folder's shard of a node-local run."""
    return {"format": SHARD_FORMAT, "node": int(node), "nodes": len(nodes), "seed": int(seed),
            "videos": list(nodes[node]), "bank": bank, "fingerprint": fingerprint}


def read_shard(node_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``NODE_DIR/shard.json`` (None when there is none); a damaged one is a BankError."""
    path = Path(node_dir) / SHARD_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BankError(f"{path}: cannot read the node's shard record ({e}); delete {node_dir} "
                        "to start this node's shard afresh") from None
    if not isinstance(record, dict) or record.get("format") != SHARD_FORMAT:
        raise BankError(f"{path}: not a tallformer node shard record; delete it or choose "
                        "another memory.node_dir")
    return record


def write_shard(node_dir: str | os.PathLike[str], record: dict[str, Any]) -> None:
    folder = Path(node_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / SHARD_RECORD, record, indent=2)


def shard_bank_path(node_dir: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """The bank a shard record names (relative paths are inside the node folder)."""
    bank = Path(record["bank"])
    return bank if bank.is_absolute() else Path(node_dir) / bank


def claim_shards(claims: Sequence[int | None], num_nodes: int, *, resume: bool) -> list[int]:
    """Which shard each node works on: ``claims[r]`` is the shard the node of rendezvous rank
    ``r`` holds on its disk (None: none yet). A held shard is kept (the rendezvous may order
    the machines differently at each launch); the others are given out in rank order.
    A resume needs every node's shard where it was."""
    held = [c for c in claims if c is not None]
    dup = sorted({c for c in held if held.count(c) > 1})
    if dup:
        ranks = [r for r, c in enumerate(claims) if c == dup[0]]
        raise BankError(f"the node folders of node ranks {ranks} all hold shard {dup[0]}; each "
                        "node needs its own memory.node_dir (a local disk, or '{node}' in the path)")
    bad = [c for c in held if not 0 <= c < num_nodes]
    if bad:
        raise BankError(f"a node folder holds shard {bad[0]} but the run has {num_nodes} nodes")
    if resume and len(held) < num_nodes:
        missing = sorted(set(range(num_nodes)) - set(held))
        ranks = [r for r, c in enumerate(claims) if c is None]
        raise BankError(
            f"the node(s) of node rank {name_list([str(r) for r in ranks])} hold no bank shard of "
            f"this run in memory.node_dir (shard(s) {name_list([str(k) for k in missing])} are "
            "missing); resume on the machines that hold them, or re-shard: 'tallformer bank "
            "merge' the node folders and start a new run from the merged bank"
        )
    free = iter(k for k in range(num_nodes) if k not in held)
    return [c if c is not None else next(free) for c in claims]


def _journal_records(folder: Path) -> int:
    """Bytes of undo journal in a node folder (writes after its last checkpoint)."""
    journal = folder / JOURNAL
    return sum(p.stat().st_size for p in journal.glob("from_*.bin")) if journal.is_dir() else 0


def merge_node_banks(sources: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                     run_dir: str | os.PathLike[str] | None = None,
                     progress: bool = True) -> MemoryBank:
    """Merge the node shards of a node-local run (or any banks) into one bank at ``out``.

    Each source is a node folder (``memory.node_dir`` of one node, with ``shard.json``: the
    videos that node owns are taken from its bank) or a bank folder (all its videos). A
    node folder whose journal holds writes after the last checkpoint (a killed run) is
    first rolled back to the checkpoint of ``run_dir`` (its ``checkpoints/last.pt``);
    without ``run_dir`` that is an error. With ``run_dir`` the sources must be every shard
    the checkpoint records, with the fingerprints it records.
    """
    from tallformer.engine.checkpoint import load_checkpoint
    from tallformer.engine.journal import rollback

    saved = None
    if run_dir is not None:
        saved = load_checkpoint(Path(run_dir) / CHECKPOINTS / LAST)
    nodes = (saved or {}).get("nodes") or None
    if saved is not None and nodes is None:
        raise BankError(f"{run_dir}: its checkpoint is not of a memory.placement=node_local run; "
                        "merge without --run")
    banks: list[MemoryBank] = []
    owned: list[list[str] | None] = []
    seen: dict[int, Path] = {}
    for src in map(Path, sources):
        record = read_shard(src)
        if record is None:
            if not (src / "meta.json").is_file():
                raise BankError(f"{src}: neither a node folder (no {SHARD_RECORD}) nor a bank (no meta.json)")
            banks.append(MemoryBank.open(src, "r"))
            owned.append(None)
            continue
        node = int(record["node"])
        if node in seen:
            raise BankError(f"{src} and {seen[node]} both hold shard {node}")
        seen[node] = src
        path = shard_bank_path(src, record)
        pending = _journal_records(src)
        if pending and saved is None:
            raise BankError(f"{src}: its journal holds bank writes after the last checkpoint (a killed "
                            "run); pass --run RUN_DIR so they are undone to that checkpoint first")
        bank = MemoryBank.open(path, "r+" if pending else "r")
        if saved is not None and nodes is not None:
            _check_against_checkpoint(src, node, record, bank, nodes)
        if pending and saved is not None:
            restored = rollback(bank, src / JOURNAL, int(saved["step"]))
            print(f"{src}: rolled back {restored} rows written after step {saved['step']}")
        banks.append(bank)
        owned.append(list(record["videos"]))
    if nodes is not None:
        missing = [k for k in range(int(nodes["count"])) if k not in seen]
        if missing:
            raise BankError(f"{run_dir} was trained on {nodes['count']} nodes but shard(s) "
                            f"{name_list([str(k) for k in missing])} are not among the sources; "
                            "give every node's folder")
    return MemoryBank.merge(out, banks, videos=owned, progress=progress)


def _check_against_checkpoint(src: Path, node: int, record: dict[str, Any], bank: MemoryBank,
                              nodes: dict[str, Any]) -> None:
    shards = nodes["shards"]
    if node >= len(shards):
        raise BankError(f"{src} holds shard {node} but the checkpoint's run has {len(shards)} nodes")
    want = shards[node]
    if list(want["videos"]) != list(record["videos"]):
        raise BankError(f"{src}: its shard's videos are not those the checkpoint records for node {node}")
    if want.get("fingerprint") and want["fingerprint"] != bank.fingerprint():
        raise BankError(f"{src}: bank fingerprint {bank.fingerprint()[:12]} but the checkpoint records "
                        f"{want['fingerprint'][:12]} for node {node}; is this the folder of that run?")
