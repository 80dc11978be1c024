"""trainables.runtime: handing a finished trial's freed memory back to the OS (Ray workers are reused)."""
from pathlib import Path

import pytest

from trainables.runtime import return_freed_memory

STATUS = Path("/proc/self/status")


def resident_mb() -> float:
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not STATUS.exists(), reason="needs Linux /proc to read the resident size")
def test_freed_small_allocations_are_returned_to_the_os() -> None:
    # ~300 MB in 1 kB heap chunks; keeping the last one pins the top of the heap, so free() alone
    # cannot shrink it: the pattern a trial's tokenised batches and Python objects leave behind.
    chunks = [bytearray(1000) for _ in range(300_000)]
    del chunks[:-1]
    held = resident_mb()
    return_freed_memory()
    assert held - resident_mb() > 150, "malloc_trim should have returned most of the ~300 MB freed"
    assert len(chunks) == 1
