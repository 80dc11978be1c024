"""Shared fixtures: where the real data and the real small encoder are, and the toy assets."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# torch's idle threads spin-wait by default, which stalls small ops badly whenever another process
# holds a core (measured 5-10x on toy-model tests); passive waiting costs nothing when alone.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tests never reach a hub: sources that are not local are reported missing instead of fetched.
os.environ.setdefault("SWEEP_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# File digests are remembered across the session's processes (Ray workers, CLI runs) in a folder of
# its own, removed at the end, rather than in the user's ~/.cache.
_DIGEST_MEMO = None
if "SWEEP_DIGEST_MEMO" not in os.environ:
    _DIGEST_MEMO = tempfile.mkdtemp(prefix="sweep-test-digests-")
    os.environ["SWEEP_DIGEST_MEMO"] = _DIGEST_MEMO


def pytest_unconfigure(config) -> None:
    if _DIGEST_MEMO is not None:
        shutil.rmtree(_DIGEST_MEMO, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SWEEP_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
E5_SMALL = Path(os.environ.get("E5_SMALL_PATH", "~/.cache/offline-models/multilingual-e5-small")).expanduser()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert (SHARED_DATA / "README.md").is_file(), f"real data not found at {SHARED_DATA} (set SWEEP_DATA_DIR)"
    return SHARED_DATA


@pytest.fixture(scope="session")
def e5_small() -> Path:
    assert (E5_SMALL / "config.json").is_file(), (
        f"e5-small not found at {E5_SMALL}: run ../shared/tools/provision-e5-small (or set E5_SMALL_PATH)")
    return E5_SMALL


@pytest.fixture(scope="session")
def toy_assets(tmp_path_factory) -> tuple[Path, Path]:
    """(data_dir, model_dir) of the generated toy world, made once per test session. The model has
    the quick default pre-training (seconds), not the demo's: the tests check mechanics."""
    from toyworld import write_toy

    return write_toy(tmp_path_factory.mktemp("toy"))
