"""Several nodes with node-local bank shards (`memory.placement=node_local`).

The end-to-end test runs two "nodes" on this machine: two `torch.distributed.run --nnodes 2
--nproc_per_node 1 --rdzv-backend c10d` processes (gloo), each with its own node folder
(`memory.node_dir=.../node{node}`), copying its shard from one shared initial bank. They
train, are killed with SIGKILL, resume and finish; then every video's rows are on its
owner's shard only, the shared source is untouched, each shard's journal rolls back to the
checkpoint, and the merged bank equals a single-process replay of the same samples (the
backbone's learning rate is 0 and drop-path off, so a written feature depends only on its
input frames, as in tests/test_train.py and tests/test_ddp_bank.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import deep_equal, descendants, random_bank, run_cli, train_lockstep
from tallformer.config import load_config
from tallformer.data.sampler import VideoExclusiveSampler, assign_nodes
from tallformer.engine.checkpoint import load_checkpoint
from tallformer.engine.distributed import Processes, node_layout
from tallformer.engine.node_shards import node_train_loader
from tallformer.engine.run_bank import claim_shards, merge_node_banks
from tallformer.engine.train import TrainingError, train
from tallformer.memory.bank import BankError, MemoryBank

ROOT = Path(__file__).resolve().parents[1]
STEPS = 5  # 5 videos split 2 + 3: 3 steps per epoch on both nodes (the smaller one padded)
OVER = ["data.batch_size=1", "data.num_workers=0", "model.backbone.drop_path_rate=0",
        "train.backbone_lr_mult=0", "memory.placement=node_local"]


# --------------------------------------------------------------------------- the split


def test_every_video_on_exactly_one_node_balanced_and_deterministic():
    rng = np.random.default_rng(0)
    frames = {f"v{i:02d}": int(n) for i, n in enumerate(rng.integers(100, 2000, size=23))}
    for nodes in (1, 2, 3, 4, 7):
        split = assign_nodes(frames, nodes, seed=5)
        assert len(split) == nodes
        assert sorted(v for part in split for v in part) == sorted(frames)
        sizes = [len(part) for part in split]
        assert max(sizes) - min(sizes) <= 1  # every node has the same steps per epoch, up to one
        totals = [sum(frames[v] for v in part) for part in split]
        assert max(totals) - min(totals) <= max(frames.values())  # greedy: within one video
        assert split == assign_nodes(frames, nodes, seed=5)
        for part in split:  # in the order of the frame counts given
            assert part == [v for v in frames if v in part]
    # equal frame counts: the seed draws the order, the node count changes the split
    same = {f"s{i}": 100 for i in range(8)}
    assert assign_nodes(same, 2, seed=0) != assign_nodes(same, 2, seed=1)
    assert assign_nodes(frames, 2, seed=5) != assign_nodes(frames, 3, seed=5)[:2]
    with pytest.raises(ValueError, match="3 videos cannot give each of 4 nodes one"):
        assign_nodes({"a": 1, "b": 2, "c": 3}, 4)


def test_node_sampler_keeps_each_node_on_its_own_videos():
    videos = [f"v{i}" for i in range(11)]
    split = assign_nodes({v: 100 + 7 * i for i, v in enumerate(videos)}, 3, seed=1)
    per_node = [[VideoExclusiveSampler(videos, 2, rank=r, world_size=2, seed=4, nodes=split, node=k)
                 for r in range(2)] for k in range(3)]
    for epoch in range(3):
        lengths = set()
        for k, samplers in enumerate(per_node):
            for s in samplers:
                s.set_epoch(epoch)
            plan = samplers[0].plan()
            assert all(s.plan() == plan for s in samplers)  # the node's ranks agree
            lengths.add(len(samplers[0]))
            firsts = [i for s in samplers for batch in s for i in batch if i < len(videos)]
            assert sorted(firsts) == sorted(videos.index(v) for v in split[k])  # each once an epoch
            for step in plan:
                ids = [videos[i] for batch in step for i in batch]
                assert set(ids) <= set(split[k])  # only the node's own videos
                assert len(ids) == len(set(ids))  # video-exclusive among the node's ranks
        assert len(lengths) == 1  # every node takes the same number of steps
    # the shuffle within a node changes with the epoch
    s = per_node[1][0]
    s.set_epoch(0)
    first = s.plan()
    s.set_epoch(1)
    assert s.plan() != first
    with pytest.raises(ValueError, match="on no node"):
        VideoExclusiveSampler(videos, 1, nodes=[split[0], split[1]], node=0)
    with pytest.raises(ValueError, match="given to nodes 0 and 1"):
        VideoExclusiveSampler(videos, 1, nodes=[videos, videos[:1]], node=0)
    with pytest.raises(ValueError, match="node 2 has 3 distinct videos"):
        VideoExclusiveSampler(videos, 1, world_size=4, nodes=[videos[:4], videos[4:8], videos[8:]], node=0)


def test_node_layout_and_shard_claims():
    assert node_layout([(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2)]) == (2, True)
    assert node_layout([(0, 0, 2), (0, 1, 2), (1, 0, 1)]) == (2, False)  # --nproc_per_node differs
    assert claim_shards([None, None, None], 3, resume=False) == [0, 1, 2]
    # the rendezvous gave the machines other ranks: each keeps the shard on its disk
    assert claim_shards([2, 0, 1], 3, resume=True) == [2, 0, 1]
    assert claim_shards([None, 0, None], 3, resume=False) == [1, 0, 2]
    with pytest.raises(BankError, match="node ranks \\[0, 2\\] all hold shard 1"):
        claim_shards([1, 0, 1], 3, resume=False)
    with pytest.raises(BankError, match="node rank 1 hold no bank shard"):
        claim_shards([0, None], 2, resume=True)


# --------------------------------------------------------------------------- merge


def _bank(root: Path, frames: dict[str, int], seed: int = 0) -> MemoryBank:
    bank = MemoryBank.create(root, frames, 8)
    rng = np.random.default_rng(seed)
    for video, n in frames.items():
        bank.write(video, 0, rng.standard_normal((-(-n // 2), 8)).astype(np.float32))
        bank.mark_complete(video)
    bank.flush()
    return bank


def test_merging_the_shards_of_a_bank_gives_that_bank_back(tmp_path):
    frames = {"a": 30, "b": 41, "c": 17, "d": 64}
    full = _bank(tmp_path / "full", frames)
    parts = [full.copy_to(tmp_path / "p0", videos=["a", "c"], progress=False),
             full.copy_to(tmp_path / "p1", videos=["b", "d"], progress=False)]
    merged = MemoryBank.merge(tmp_path / "merged", parts, progress=False)
    assert merged.fingerprint() == full.fingerprint()
    for video in frames:
        assert np.array_equal(np.load(merged.path(video)), np.load(full.path(video)))
    # each video from the bank that owns it: b's rows from the second copy only
    other = _bank(tmp_path / "other", frames, seed=1)
    picked = MemoryBank.merge(tmp_path / "picked", [full, other], videos=[["a", "c", "d"], ["b"]],
                              progress=False)
    assert np.array_equal(np.load(picked.path("b")), np.load(other.path("b")))
    assert np.array_equal(np.load(picked.path("a")), np.load(full.path("a")))
    with pytest.raises(BankError, match="'b' is taken from both"):
        MemoryBank.merge(tmp_path / "twice", [full, other], videos=[["b"], ["b"]])
    f32 = MemoryBank.create(tmp_path / "f32", {"e": 10}, 8, dtype="float32")
    with pytest.raises(BankError, match="dtype: 'float16' -> 'float32'"):
        MemoryBank.merge(tmp_path / "mixed", [full, f32])
    with pytest.raises(BankError, match="not an empty folder"):
        MemoryBank.merge(tmp_path / "p0", parts[1:])


# --------------------------------------------------------------------------- node banks in-process


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, object]:
    from tallformer.data.annotations import load_annotations
    from tallformer.data.synthetic import generate_synthetic_dataset
    from tallformer.engine.run_bank import training_frame_counts

    root = tmp_path_factory.mktemp("multinode")
    ann = generate_synthetic_dataset(root / "syn", 6, seed=3, min_length=10, max_length=14,
                                     val_fraction=0.2, progress=False)
    videos = root / "syn" / "videos"
    frames = training_frame_counts(_cfg(ann, videos), load_annotations(ann))
    initial = random_bank(root / "initial", frames)
    return {"root": root, "annotations": ann, "videos": videos, "frames": frames, "initial": initial.root}


def _cfg(ann: object, videos: object, *extra: str):
    return load_config("demo", [f"data.annotations={ann}", f"data.videos={videos}", *OVER, *extra])


def _node0_of_2() -> Processes:
    return Processes(0, 1, torch.device("cpu"), False, node_rank=0, num_nodes=2)


def test_a_node_builds_copies_or_opens_only_its_own_videos(data, tmp_path):
    from tallformer.engine.bank_build import build_bank
    from tallformer.engine.factory import build_detector
    from tallformer.engine.run_bank import open_run_bank

    frames: dict[str, int] = data["frames"]  # type: ignore[assignment]
    split = assign_nodes(frames, 2, seed=10)
    own = {v: frames[v] for v in split[0]}
    cfg = _cfg(data["annotations"], data["videos"])
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg)
    # no memory.bank_dir: the node builds its own videos from the initial backbone
    built = open_run_bank(cfg, tmp_path / "n_build", model, own, _node0_of_2(), node_local=True, progress=False)
    assert built is not None
    assert sorted(built.videos) == sorted(split[0])
    assert all(built.is_complete(v) for v in built.videos)
    video = split[0][-1]  # its rows are those of a build of that video by itself
    build_bank(cfg, tmp_path / "alone", backbone=model.backbone, videos=[video], progress=False)
    alone = MemoryBank.open(tmp_path / "alone")
    np.testing.assert_allclose(np.load(built.path(video)).astype(np.float32),
                               np.load(alone.path(video)).astype(np.float32), rtol=1e-2, atol=1e-3)
    # from memory.bank_dir: a copy of the node's videos only
    copy_cfg = _cfg(data["annotations"], data["videos"], f"memory.bank_dir={data['initial']}")
    copied = open_run_bank(copy_cfg, tmp_path / "n_copy", model, own, _node0_of_2(), node_local=True, progress=False)
    assert copied is not None
    assert sorted(copied.videos) == sorted(split[0])
    assert copied.root == tmp_path / "n_copy" / "bank"
    # in place, on a bank whose other videos are not even complete: only the node's are checked
    mine = MemoryBank.open(data["initial"]).copy_to(tmp_path / "users", progress=False)
    other = split[1][0]
    mine.mark_complete(other, False)
    place_cfg = _cfg(data["annotations"], data["videos"], f"memory.bank_dir={tmp_path / 'users'}",
                     "memory.in_place=true")
    placed = open_run_bank(place_cfg, tmp_path / "n_place", model, own, _node0_of_2(), node_local=True, progress=False)
    assert placed is not None
    assert placed.root == tmp_path / "users"
    assert not (tmp_path / "n_place" / "bank").exists()


# --------------------------------------------------------------------------- two nodes, killed


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(data: dict[str, object], name: str = "", *extra: str) -> list[str]:
    root: Path = data["root"]  # type: ignore[assignment]
    return ["--config", "demo", f"data.annotations={data['annotations']}", f"data.videos={data['videos']}",
            f"run_dir={root / f'{name}run'}", f"memory.bank_dir={data['initial']}",
            f"memory.node_dir={root / f'{name}node{{node}}'}", *OVER, f"train.max_steps={STEPS}",
            "train.checkpoint_steps=2", "train.log_interval=1", "--no-progress", *extra]


def _start_nodes(args: list[str], out: Path) -> list[subprocess.Popen]:
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    procs = []
    for node in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--node-rank", str(node),
               "-m", "tallformer", "train", *args]
        log = open(out / f"node{node}.log", "w")  # noqa: SIM115 - closed by the child's exit
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    return procs


def _finish(procs: list[subprocess.Popen], out: Path) -> list[str]:
    texts = []
    for node, proc in enumerate(procs):
        try:
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        text = (out / f"node{node}.log").read_text()
        assert proc.returncode == 0, f"node {node} exited {proc.returncode}:\n{text[-4000:]}"
        texts.append(text)
    return texts


def _logged_steps(run: Path) -> list[int]:
    steps = []
    if (run / "log.jsonl").is_file():
        for line in (run / "log.jsonl").read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):
                steps.append(json.loads(line)["step"])
    return steps


def _kill_when(procs: list[subprocess.Popen], ready, out: Path) -> None:
    """SIGKILL both nodes (launchers and workers at once) as soon as ``ready()``."""
    deadline = time.monotonic() + 300
    try:
        while not ready():
            for node, proc in enumerate(procs):
                assert proc.poll() is None, (f"node {node} ended before the kill:\n"
                                             f"{(out / f'node{node}.log').read_text()[-3000:]}")
            assert time.monotonic() < deadline, "the run did not reach the kill point in time"
            time.sleep(0.02)
    finally:
        victims = [pid for proc in procs for pid in (*descendants(proc.pid), proc.pid)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in procs:
            proc.wait()
        gone = time.monotonic() + 30
        for pid in victims:  # the workers are gone too (not our children: poll /proc)
            while Path(f"/proc/{pid}").exists() and "Z" not in _state_of(pid) and time.monotonic() < gone:
                time.sleep(0.01)


def _state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def _arrays(root: Path) -> dict[str, np.ndarray]:
    bank = MemoryBank.open(root)
    return {v: np.load(bank.path(v)) for v in bank.videos}


def _replay(data: dict[str, object], shards: list[list[str]], tmp_path: Path, snapshot_at: int
            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One process runs node 0's and node 1's batches step by step on one copy of the
    initial bank: (the bank after `snapshot_at` steps, the bank after STEPS)."""
    from tallformer.data.annotations import load_annotations
    from tallformer.engine.factory import build_detector
    from tallformer.engine.optim import make_optimizer

    cfg = _cfg(data["annotations"], data["videos"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(cfg.seed)
        model = build_detector(cfg)
        bank = MemoryBank.open(data["initial"]).copy_to(tmp_path / "replay", progress=False)
        ann = load_annotations(cfg.data.annotations)
        optimizer = make_optimizer(model, cfg.train)
        loaders = [node_train_loader(cfg, ann, bank, shards, node) for node in range(2)]
        snapshot: dict = {}

        def at(done: int) -> None:
            if done == snapshot_at:
                bank.flush()
                snapshot.update(_arrays(bank.root))

        train_lockstep(model, loaders, optimizer, bank, STEPS, on_step=at)
        bank.flush()
    finally:
        torch.set_num_threads(threads)
    return snapshot, _arrays(bank.root)


def _merge_cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(["bank", "merge", "--no-progress", *args])  # in this process: no start-up



@pytest.mark.slow
def test_two_nodes_killed_and_resumed_keep_every_video_on_its_owner(data, tmp_path):
    root: Path = data["root"]  # type: ignore[assignment]
    run, nodes = root / "run", [root / "node0", root / "node1"]
    initial = _arrays(data["initial"])  # type: ignore[arg-type]
    _finish(_start_nodes(_args(data, "straight_"), tmp_path), tmp_path)
    straight = load_checkpoint(root / "straight_run" / "checkpoints" / "last.pt")
    args = _args(data)
    procs = _start_nodes(args, tmp_path)

    def journals_written() -> bool:  # both nodes past the step-2 checkpoint, with records
        return max(_logged_steps(run), default=0) >= 3 and all(
            any(p.stat().st_size for p in (n / "journal").glob("from_000000002.*")) for n in nodes)

    _kill_when(procs, journals_written, tmp_path)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 2
    shards = [s["videos"] for s in state["nodes"]["shards"]]
    assert shards == assign_nodes(data["frames"], 2, seed=10)  # type: ignore[arg-type]
    assert state["bank"] is None
    assert state["nodes"]["count"] == 2
    want_at_2, want = _replay(data, shards, tmp_path, snapshot_at=2)

    # the killed shards, merged: a journal with writes after the checkpoint needs --run ...
    copies = [tmp_path / f"copy{k}" for k in range(2)]
    for node, copy in zip(nodes, copies, strict=True):
        shutil.copytree(node, copy)
    refused = _merge_cli("--out", str(tmp_path / "m_killed"), *map(str, copies))
    assert refused.returncode == 2
    assert "pass --run RUN_DIR" in refused.stderr
    # ... which rolls every shard back to the checkpoint by its own journal
    done = _merge_cli("--run", str(run), "--out", str(tmp_path / "m_killed"), *map(str, copies))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("rolled back") == 2
    assert _arrays(tmp_path / "m_killed").keys() == want_at_2.keys()
    for video, rows in _arrays(tmp_path / "m_killed").items():
        assert np.array_equal(rows, want_at_2[video]), f"{video}: the shard is not at its checkpoint"

    texts = _finish(_start_nodes(args, tmp_path), tmp_path)
    assert all("rolled back" in text for text in texts), "a node did not roll back its own shard"
    final = load_checkpoint(run / "checkpoints" / "last.pt")
    assert final["step"] == STEPS
    for key in ("model", "optimizer", "epoch", "batch_in_epoch", "samples", "rng"):
        assert deep_equal(final[key], straight[key]), f"{key} differs from the uninterrupted run"
    steps = _logged_steps(run)
    assert steps == list(range(1, STEPS + 1))

    # every video on exactly its owner's shard, changed there; the shared source untouched
    for k, node in enumerate(nodes):
        shard = _arrays(node / "bank")
        assert sorted(shard) == sorted(shards[k])
        assert final["nodes"]["shards"][k]["fingerprint"] == MemoryBank.open(node / "bank").fingerprint()
        for video, rows in shard.items():
            assert (rows != initial[video]).any(), f"{video}: no row written on its owner node {k}"
    for video, rows in _arrays(data["initial"]).items():  # type: ignore[arg-type]
        assert np.array_equal(rows, initial[video]), f"{video}: the shared source bank changed"

    # merged: the single-process replay, bit for bit, and the source bank's fingerprint
    merged = merge_node_banks(nodes, tmp_path / "merged", run_dir=run, progress=False)
    assert merged.fingerprint() == MemoryBank.open(data["initial"]).fingerprint()
    got = _arrays(merged.root)
    assert got.keys() == want.keys()
    for video in got:
        assert np.array_equal(got[video], want[video]), f"{video}: differs from the replay"

    # a resume on another number of nodes is refused, saying how to re-shard
    cfg = _cfg(data["annotations"], data["videos"], f"run_dir={run}", f"memory.bank_dir={data['initial']}",
               f"memory.node_dir={root / 'node{node}'}", f"train.max_steps={STEPS + 1}",
               "train.checkpoint_steps=2", "train.log_interval=1")
    with pytest.raises(TrainingError, match=r"trained on 2 nodes .* this resume has 1; .*tallformer bank merge"):
        train(cfg, progress=False)
