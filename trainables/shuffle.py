"""The reference's shuffled sentence streams: HF datasets 2.4.0's buffer shuffle.

The reference reads its word-pair files as `IterableDataset`s shuffled with
`.shuffle(seed=seed, buffer_size=10_000)` (multilingual_eval/datasets/realignment_task.py): the
alignment sample (seed 42) and each language's realignment stream (the trial's seed). A buffer
shuffle yields its t-th item after reading item `buffer_size + t`, so the first D items of a stream
come from the first D + `buffer_size` items of the file: a trial reads the head of its corpus, not
the whole of it (`items_read`).
"""
from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np

# The reference's buffer (realignment_task.py), and HF datasets' batch of replacement indexes
# (datasets 2.4.0, BufferShuffledExamplesIterable._iter_random_indices).
SHUFFLE_BUFFER = 10_000
SHUFFLE_DRAW_BATCH = 1000


def shuffled_positions(n: int, seed: int, buffer_size: int = SHUFFLE_BUFFER) -> Iterator[int]:
    """Positions 0..n-1 in the order HF datasets 2.4.0's `IterableDataset.shuffle` yields them.

    The reference's pinned version (scripts/2023_acl/requirements.txt: datasets==2.4.0) fills a
    buffer of `buffer_size` items; each further item makes it yield the buffer slot at a random
    index (drawn `SHUFFLE_DRAW_BATCH` at a time with `rng.integers`) and take that slot's place;
    at the end the rest of the buffer is shuffled (`rng.shuffle`) and yielded. The generator is
    `np.random.default_rng(seed)`, copied before each iteration (`deepcopy(self.generator)`), so
    every pass over the stream is the same order. With n <= buffer_size this is
    `default_rng(seed).permutation(n)`. Lazy: a sample of a few hundred sentences from a corpus
    of a million draws only what it uses.
    """
    if n < 0 or buffer_size < 1:
        raise ValueError(f"shuffled_positions needs n >= 0 and buffer_size >= 1, got {n} and {buffer_size}")
    rng = np.random.default_rng(seed)
    buffer = np.arange(min(n, buffer_size))
    for incoming in range(len(buffer), n, SHUFFLE_DRAW_BATCH):
        draws = rng.integers(0, buffer_size, size=SHUFFLE_DRAW_BATCH)
        for slot, item in zip(draws.tolist(), range(incoming, min(incoming + SHUFFLE_DRAW_BATCH, n))):
            yield int(buffer[slot])
            buffer[slot] = item
    rng.shuffle(buffer)
    yield from buffer.tolist()


def items_read(n_yielded: int, buffer_size: int = SHUFFLE_BUFFER) -> int:
    """How many items of the stream's source the first `n_yielded` shuffled items come from:
    whatever the source's length beyond it, those items are the same."""
    return n_yielded + buffer_size if n_yielded > 0 else 0


class ShuffledStream:
    """Random access to one buffer-shuffled stream: `stream[k]` is its k-th position, the generator
    run only as far as the largest k asked (a resumed run re-derives its position)."""

    def __init__(self, n: int, seed: int, buffer_size: int = SHUFFLE_BUFFER) -> None:
        self.n = n
        self._source = shuffled_positions(n, seed, buffer_size)
        self._positions: list[int] = []

    def __getitem__(self, k: int) -> int:
        if not 0 <= k < self.n:
            raise IndexError(f"stream position {k} outside 0..{self.n - 1}")
        if len(self._positions) <= k:  # a few thousand at a time: a step reads one position a language
            self._positions.extend(itertools.islice(self._source, max(k + 1 - len(self._positions), 4096)))
        return self._positions[k]
