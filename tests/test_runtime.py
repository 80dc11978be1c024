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


# A trial step frees and allocates blocks of hundreds of MB (e5-small's 250k-word embedding:
# its gradient, the optimizer's temporaries) in the thread Tune runs it in. Page faults of 5
# training steps of a small BERT with a 100 MB embedding, in a fresh interpreter, in a thread.
_STEPS = """
import resource, sys, threading
sys.path.insert(0, {root!r})
import torch
from transformers import BertConfig, BertForTokenClassification
from trainables.runtime import reuse_freed_memory
torch.manual_seed(0)
torch.set_num_threads(1)
config = BertConfig(vocab_size=100_000, hidden_size=256, num_hidden_layers=1, num_attention_heads=4,
                    intermediate_size=512, num_labels=5)
model = BertForTokenClassification(config)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
inputs, labels = torch.randint(0, 100_000, (8, 16)), torch.randint(0, 5, (8, 16))
faults = []
def steps():
    reuse_freed_memory()
    def step():
        model(input_ids=inputs, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    step()
    step()  # the first steps map their pages in any case
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=steps)
thread.start()
thread.join()
print(faults[0])
"""


def _step_faults(env: dict[str, str]) -> int:
    import os
    import subprocess
    import sys

    code = _STEPS.format(root=str(Path(__file__).resolve().parents[1]))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=300, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not STATUS.exists() or not __import__("ctypes.util").util.find_library("c"),
                    reason="glibc's allocator on Linux")
def test_workers_reuse_freed_large_blocks_instead_of_faulting_them_in_again() -> None:
    from trainables.runtime import ALLOCATOR_ENV

    embedding_pages = (100_000 * 256 * 4) // 4096  # one 100 MB block, at 4 kB a page
    default, worker = _step_faults({}), _step_faults(dict(ALLOCATOR_ENV))
    assert default > 5 * embedding_pages  # glibc's default: blocks mapped afresh at every step
    assert worker < default / 10, (worker, default)  # a Ray worker's settings: the blocks are reused
