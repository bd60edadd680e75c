"""The frames of one video, decoded once and in order by a background thread.

A test path that reads a video front to back (sliding windows, or the backbone chunk by
chunk over the whole video) takes its frames from a `FrameStream`: the thread decodes
``block`` frames at a time, applies the test transform and queues a bounded number of
blocks ahead, and frames behind the reader are dropped. So every frame is decoded once and
memory does not grow with the video's length.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from tallformer.data.video import FrameSource

__all__ = ["FrameStream"]


class FrameStream:
    """The frames of one source, decoded once and in order by a background thread.

    The thread reads `block` frames at a time, applies `transform` (uint8 ``[b, H, W, 3]``
    -> float32 ``[3, b, h, w]``) and queues at most `depth` blocks ahead. `take(start, stop)`
    returns ``[3, stop - start, h, w]``; successive calls must not move `start` backwards,
    and the blocks wholly before `start` are dropped. `peak_frames` is the most frames held
    at once (queued and buffered), which bounds the memory whatever the video's length.
    """

    def __init__(self, source: FrameSource, block: int, depth: int,
                 transform: Callable[[Any], Tensor]) -> None:
        self.num_frames = len(source)
        self._source = source
        self._block = block
        self._transform = transform
        self._queue: queue.Queue[tuple[int, Tensor] | BaseException | None] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._blocks: deque[tuple[int, Tensor]] = deque()
        self._received = 0  # frames [0, _received) have come out of the queue
        self._dropped = 0  # frames [0, _dropped) are gone
        self.peak_frames = 0
        self._thread = threading.Thread(target=self._work, name=f"decode {source.path.name}",
                                        daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            for start in range(0, self.num_frames, self._block):
                if self._stop.is_set():
                    return
                stop = min(start + self._block, self.num_frames)
                self._put((start, self._transform(self._source.read(start, stop))))
            self._put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def _put(self, item: tuple[int, Tensor] | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def take(self, start: int, stop: int) -> Tensor:
        if not 0 <= start < stop <= self.num_frames or start < self._dropped:
            raise ValueError(f"frames [{start}, {stop}) of {self.num_frames} requested after "
                             f"frame {self._dropped} was dropped")
        while self._received < stop:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                raise RuntimeError(f"the decoder ended at frame {self._received} of {self.num_frames}")
            self._blocks.append(item)
            self._received = item[0] + item[1].shape[1]
            self._drop_before(start)
            held = self._received - self._dropped + self._queue.qsize() * self._block
            self.peak_frames = max(self.peak_frames, held)
        self._drop_before(start)
        parts = [x[:, max(start - s, 0):stop - s] for s, x in self._blocks
                 if s < stop and s + x.shape[1] > start]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _drop_before(self, start: int) -> None:
        while self._blocks and self._blocks[0][0] + self._blocks[0][1].shape[1] <= start:
            s, x = self._blocks.popleft()
            self._dropped = s + x.shape[1]

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._blocks.clear()
