"""Installing on Python 3.10-3.13, x86_64 and aarch64: systran-align (fast_align as a library) is a
dependency only where a wheel of it exists, and where a `fastalign_backend` that needs it or the
programs is chosen without them, the `fastalign` pair source says in one line what to install
(the default backend, "numpy", needs neither: tests/test_fastalign_numpy.py)."""

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import trainables.pairs as pairs_module
from trainables.errors import TrialInputError

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# The wheels PyPI has of systran-align 3.5.0, its only release (no sdist, so pip cannot build it
# where none of these fits): `pip download systran-align==3.5.0 --only-binary=:all:
# --python-version V --platform P` finds one for 3.10 and 3.11 on manylinux x86_64, none for 3.12,
# 3.13 or aarch64.
SYSTRAN_ALIGN_WHEELS = (
    "cp310-cp310-manylinux_2_17_x86_64",
    "cp311-cp311-manylinux_2_17_x86_64",
)


def _dependency(name: str) -> Requirement:
    # A regex, not tomllib: the project supports Python 3.10, which has no tomllib.
    text = PYPROJECT.read_text(encoding="utf-8")
    block = text.split("\ndependencies = [", 1)[1].split("\n]", 1)[0]
    found = [Requirement(spec) for spec in re.findall(r'^\s*"([^"]+)"', block, flags=re.MULTILINE)]
    matching = [requirement for requirement in found if requirement.name == name]
    assert len(matching) == 1, f"{name} should be listed once in {PYPROJECT}'s dependencies"
    return matching[0]


def _environment(version: str, machine: str, platform: str = "linux", implementation: str = "CPython") -> dict:
    system = {"linux": "Linux", "darwin": "Darwin", "win32": "Windows"}[platform]
    return {"python_version": version, "python_full_version": f"{version}.1", "platform_machine": machine,
            "sys_platform": platform, "platform_system": system, "os_name": "nt" if platform == "win32" else "posix",
            "platform_python_implementation": implementation, "implementation_name": implementation.lower(),
            "platform_release": "", "platform_version": "", "implementation_version": f"{version}.1", "extra": ""}


def _has_wheel(version: str, machine: str, platform: str, implementation: str) -> bool:
    """Whether one of SYSTRAN_ALIGN_WHEELS installs there (glibc >= 2.17 Linux assumed)."""
    if platform != "linux" or implementation != "CPython":
        return False
    interpreter = "cp" + version.replace(".", "")
    return f"{interpreter}-{interpreter}-manylinux_2_17_{machine}" in SYSTRAN_ALIGN_WHEELS


TARGETS = [(version, machine, platform, implementation)
           for version in ("3.10", "3.11", "3.12", "3.13")
           for machine, platform in (("x86_64", "linux"), ("aarch64", "linux"), ("ppc64le", "linux"),
                                     ("s390x", "linux"), ("i686", "linux"), ("x86_64", "darwin"),
                                     ("arm64", "darwin"), ("AMD64", "win32"), ("ARM64", "win32"))
           for implementation in ("CPython", "PyPy")]


@pytest.mark.parametrize("version, machine, platform, implementation", TARGETS)
def test_systran_align_is_required_exactly_where_one_of_its_wheels_installs(version, machine, platform, implementation):
    # pip would fail the whole install on an environment the marker admits but no wheel fits.
    marker = _dependency("systran-align").marker
    assert marker is not None, "systran-align needs an environment marker: it has wheels for few platforms"
    environment = _environment(version, machine, platform, implementation)
    assert marker.evaluate(environment) == _has_wheel(version, machine, platform, implementation)


def test_the_marker_admits_both_supported_wheels_and_the_project_still_allows_3_10():
    # Guards against a marker that is right only by excluding everything.
    marker = _dependency("systran-align").marker
    admitted = [target for target in TARGETS if marker.evaluate(_environment(*target))]
    assert admitted == [("3.10", "x86_64", "linux", "CPython"), ("3.11", "x86_64", "linux", "CPython")]
    requires_python = re.search(r'^requires-python\s*=\s*"([^"]+)"', PYPROJECT.read_text(encoding="utf-8"),
                                flags=re.MULTILINE).group(1)
    assert all(version in SpecifierSet(requires_python) for version in ("3.10", "3.11", "3.12", "3.13"))


def _without_fast_align(monkeypatch: pytest.MonkeyPatch, programs: tuple[str, ...] = ()) -> None:
    """This interpreter as one where systran-align did not install (Python 3.12+, aarch64) and
    only `programs` are on PATH; every other lookup is the real one."""
    real_find_spec, real_which = importlib.util.find_spec, shutil.which
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "systran_align" else real_find_spec(name, *args))
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: (
        f"/opt/fast_align/{name}" if name in programs else
        None if name in pairs_module.FASTALIGN_PROGRAMS else real_which(name, *args, **kwargs)))


@pytest.mark.parametrize("programs", [(), ("fast_align",), ("atools",)])
def test_without_systran_align_the_fastalign_source_fails_in_one_line_saying_what_to_install(monkeypatch, programs):
    _without_fast_align(monkeypatch, programs)
    with pytest.raises(TrialInputError) as failure:
        pairs_module.fastalign_backend()
    message = str(failure.value)
    assert "\n" not in message and message.startswith("pair source 'fastalign' needs fast_align")
    assert "pip install systran-align" in message and "Linux x86_64" in message
    assert "fast_align and atools programs" in message and "on PATH" in message


def test_without_systran_align_the_programs_on_path_are_used(monkeypatch):
    _without_fast_align(monkeypatch, programs=pairs_module.FASTALIGN_PROGRAMS)
    assert pairs_module.fastalign_backend() == "fast_align"


def test_systran_align_where_installed_is_preferred_to_the_programs(monkeypatch):
    _without_fast_align(monkeypatch, programs=pairs_module.FASTALIGN_PROGRAMS)
    real_find_spec = importlib.util.find_spec
    stand_in = importlib.util.spec_from_loader("systran_align", loader=None)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: stand_in if name == "systran_align" else real_find_spec(name, *args))
    assert pairs_module.fastalign_backend() == "systran-align"
