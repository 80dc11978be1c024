"""Device, precision and seeding: the few runtime decisions every phase shares."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import random
from typing import Callable, Iterator

import numpy as np
import torch

from trainables.settings import Settings


def resolve_device(settings: Settings) -> torch.device:
    if settings.device != "auto":
        return torch.device(settings.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(settings: Settings, device: torch.device) -> contextlib.AbstractContextManager:
    """The arithmetic of the model's forward and backward passes (docs/protocol.md, precision).

    "tf32" (default): fp32 weights and activations with TF32 matmuls on CUDA, what the reference
    computed (torch 1.10 enabled TF32 matmuls by default on its A40s); plain fp32 on CPU.
    "fp32": full fp32 matmuls everywhere. "bf16": bf16 autocast, a speed choice of ours.
    """
    if settings.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if settings.precision == "tf32" and device.type == "cuda":
        return _tf32_matmuls()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _tf32_matmuls() -> Iterator[None]:
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; deterministic kernels where torch offers them on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def configure_threads(settings: Settings) -> None:
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # mallopt parameters (glibc's malloc.h)
# Freed memory glibc keeps at its heap's top before returning it by itself: "never" in practice,
# as a trial frees several 384 MB blocks at once; `return_freed_memory` returns it between trials.
HEAP_TRIM_THRESHOLD = 1 << 36
# The same settings for a process about to start (Ray workers: sweep.runner passes them in the
# runtime environment). glibc reads them at start-up; one arena, because a thread's own arena
# maps every block over 64 MB afresh whatever the mmap settings, and Tune runs a trial in a thread.
ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(HEAP_TRIM_THRESHOLD)}


def reuse_freed_memory() -> bool:
    """Make glibc's allocator serve large blocks from its heap and keep them when they are freed.

    By default glibc maps every block over 32 MB afresh and unmaps it on free. A training step
    frees and allocates such blocks many times (e5-small's 250k-word embedding: its gradient and
    the optimizer's temporaries, 384 MB each), so every step faults in and zeroes gigabytes of
    new pages: measured on one CPU thread (the machine's other core busy), an e5-small step took
    4.5 s, 1.8 s of it in the kernel (300k page faults a step); with the blocks reused, 2.2 s
    and no faults. Nothing computed changes. Memory a finished trial freed still goes back to
    the system (`return_freed_memory`). Process-wide, but only the main arena's blocks: a thread
    with an arena of its own needs `ALLOCATOR_ENV` at process start. True where it took effect."""
    mallopt = glibc_function("mallopt")
    if mallopt is None:  # musl, macOS: their allocators, left as they are
        return False
    if all(os.environ.get(name) == value for name, value in ALLOCATOR_ENV.items()):
        return True  # set at start-up (a Ray worker): a larger trim threshold than mallopt's int takes
    # mallopt takes a C int: a larger Python int would be cut to its low 32 bits (1 << 36 -> 0,
    # i.e. trim at every free), so the threshold here is the largest int, 2 GiB
    int_max = (1 << (8 * ctypes.sizeof(ctypes.c_int) - 1)) - 1
    return (bool(mallopt(ctypes.c_int(M_MMAP_MAX), ctypes.c_int(0)))
            and bool(mallopt(ctypes.c_int(M_TRIM_THRESHOLD), ctypes.c_int(min(HEAP_TRIM_THRESHOLD, int_max)))))


GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_MMAP_THRESHOLD: 128 * 1024, M_TRIM_THRESHOLD: 128 * 1024}


def restore_default_allocator() -> None:
    """glibc's documented default values back after `reuse_freed_memory` (benchmarks measure
    both). The dynamic adjustment of the mmap threshold, off once a value is set, stays off."""
    mallopt = glibc_function("mallopt")
    if mallopt is not None:
        for parameter, value in GLIBC_DEFAULTS.items():
            mallopt(ctypes.c_int(parameter), ctypes.c_int(value))


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Evaluation mode and no gradients, restoring the previous training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def return_freed_memory() -> None:
    """Collect garbage and hand freed memory back to the operating system.

    glibc's allocator keeps the memory a trial freed (a 1 GB live set peaked at 3.1 GB of RSS in
    an e5-small trial and stayed there), so a worker process that runs trial after trial holds its
    worst trial's peak; `malloc_trim` returns it (measured: 3.1 GB -> 1.0 GB). glibc only.
    """
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim = glibc_function("malloc_trim")
    if trim is not None:
        trim(0)


def glibc_function(name: str) -> Callable[..., int] | None:
    """The C library's function `name` through ctypes, None where the library lacks it
    (`malloc_trim` and `mallopt` are glibc's: not musl's, not macOS's)."""
    libc_name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(libc_name), name, None) if libc_name else None
