"""What every benchmark shares: result rows, the run context, timing helpers, machine facts.

Every benchmark is a side-by-side ratio measured in the same run (the machines here are shared
and noisy, so no absolute time is a target). A benchmark returns a `Section`: one or more table
rows (benchmark, ours, baseline, ratio, target, pass) plus the raw details that go to the JSON.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

PROJECT_ROOT = Path(__file__).resolve().parents[1]
E5_SMALL_ENV = "E5_SMALL_PATH"
DEFAULT_E5_SMALL = "~/.cache/offline-models/multilingual-e5-small"
DATA_DIR_ENV = "SWEEP_DATA_DIR"
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"  # ../shared/data from the project root
JSON_FORMAT_VERSION = 1

# Matrix-multiply peak: square fp32 matmuls, best of a few timed repetitions.
PEAK_MATMUL_SIZE = 1024
PEAK_MATMUL_REPEATS = 8  # matmuls per timed repetition
PEAK_MATMUL_TRIALS = 3  # timed repetitions (best kept: the least disturbed by other processes)
SMOKE_PEAK_MATMUL_SIZE = 256


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One line of the table. `ratio` is ours / baseline unless the benchmark says otherwise;
    `passed` is None for information rows (no target)."""

    benchmark: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Section:
    """What one benchmark returns: its rows, its status and everything it measured."""

    name: str
    rows: list[Row]
    status: str = "ok"  # "ok", or e.g. "skipped: no GPU"
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # printed under the table (breakdowns)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": self.seconds,
                "rows": [row.to_dict() for row in self.rows], "notes": self.notes, "details": self.details}


@dataclass(frozen=True)
class Context:
    """Where things are and how big to make them (smoke: tiny slices, only the structure counts)."""

    e5_path: Path
    data_dir: Path
    work_dir: Path  # scratch space of this run (caches, sweeps); removed at the end
    smoke: bool = False
    model_path: Path | None = None  # the encoder benchmarks 1-3 use; None: e5-small (smoke: the toy BERT)
    corpus: str = "ntrex"  # parallel corpus of benchmarks 2-3 (smoke: the toy data's "toy")
    threads: int = 1  # torch threads of benchmarks 1-3, ours and baseline alike (--threads)

    @property
    def model(self) -> Path:
        return self.model_path or self.e5_path

    @property
    def model_label(self) -> str:
        return "toy BERT" if self.model_path else "e5-small"

    def scratch(self, name: str) -> Path:
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def default_context(smoke: bool, work_dir: Path) -> Context:
    e5 = Path(os.environ.get(E5_SMALL_ENV) or DEFAULT_E5_SMALL).expanduser()
    data = Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()
    if not data.is_absolute():  # the documented default is relative to the project root
        data = PROJECT_ROOT / data
    return Context(e5_path=e5.resolve(), data_dir=data.resolve(), work_dir=work_dir, smoke=smoke)


def check_inputs(context: Context, needs: Collection[str] = ("model", "data")) -> list[str]:
    """One line per missing input of those `needs` names ("model": the model folder, "data": the data
    dir), empty when everything is there."""
    problems = []
    if "model" in needs and not (context.model / "config.json").is_file():
        problems.append(f"model not found: {context.model}/config.json (set ${E5_SMALL_ENV}, or run "
                        f"../shared/tools/provision-e5-small)")
    if "data" in needs and not (context.data_dir / "ud").is_dir():
        problems.append(f"data not found: {context.data_dir}/ud (set ${DATA_DIR_ENV})")
    return problems


# --------------------------------------------------------------------------------------------
# Formatting


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 1 else f"{value:.3f} s"


def fmt_rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}"


def fmt_percent(value: float) -> str:
    return f"{100 * value:.1f}%" if value >= 0.01 else f"{100 * value:.3f}%"


# --------------------------------------------------------------------------------------------
# Measurement helpers


class Stopwatch:
    """Accumulates wall time (perf_counter) per named phase; nested phases are allowed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.calls[name] = self.calls.get(name, 0) + 1

        timed.__wrapped__ = function  # type: ignore[attr-defined]
        return timed


def matmul_peak_flops(size: int = PEAK_MATMUL_SIZE, repeats: int = PEAK_MATMUL_REPEATS,
                      trials: int = PEAK_MATMUL_TRIALS, device: str = "cpu", dtype: Any = None) -> float:
    """Achievable matrix-multiply FLOP/s with torch on this machine (fp32 by default): the best of
    `trials` timings of `repeats` square matmuls, 2 n^3 FLOP each."""
    import torch

    dtype = dtype or torch.float32
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    a @ b  # warm-up: thread pool, kernels
    best = 0.0
    for _ in range(trials):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = max(best, repeats * 2 * size**3 / (time.perf_counter() - start))
    return best


def non_embedding_parameters(model: Any) -> int:
    """Parameters outside embedding tables (the usual convention of 6 N FLOP per training token)."""
    import torch

    embedding_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)


def run_python_module(module: str, arguments: Sequence[str], timeout_s: float,
                      env: Mapping[str, str] | None = None, threads: int | None = None) -> tuple[float, str]:
    """Run `python -m module arguments` from the project root; (wall seconds, stdout).

    Raises RuntimeError with the end of stderr when it fails.
    """
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), environment.get("PYTHONPATH")]))
    if threads is not None:  # BLAS/OpenMP pools sized before torch starts
        environment["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, *arguments], cwd=PROJECT_ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-3000:]
        raise RuntimeError(f"python -m {module} {' '.join(arguments)} failed ({done.returncode}):\n{tail}")
    return wall, done.stdout


def write_json_atomic(value: Any, path: Path) -> None:
    """JSON through `trainables.cache.atomic_save`: a reader never sees a half-written file."""
    from trainables.cache import atomic_save

    def save(data: Any, tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")

    atomic_save(value, Path(path), save)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# The machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What the figures came from: CPU, cores, memory, load, library versions, GPU if any."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        total_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        info["memory_gib"] = round(total_kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        info["memory_gib"] = None
    return info
