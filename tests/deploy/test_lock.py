"""Reproducible installs: `make install` and the image install exactly the lock files, the two
locks agree, every package carries hashes, and the environment the suite runs in is the lock."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DEV_LOCK = ROOT / "requirements" / "dev.txt"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
PROJECT = "repovault-pipeline"


def pins(lock: Path) -> list[tuple[str, str, Requirement]]:
    """(name, version, requirement with its marker) of every entry of a lock file (a universal
    lock may pin one package twice, for different Pythons); each carries sha256 hashes."""
    text = lock.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec, *hashes = line.split("--hash=")
        requirement = Requirement(spec.strip())
        assert hashes and all(h.strip().startswith("sha256:") for h in hashes), line[:80]
        (version,) = [s.version for s in requirement.specifier if s.operator == "=="]
        found.append((canonicalize_name(requirement.name), version, requirement))
    return found


def applies(requirement: Requirement, extras: tuple[str, ...] = ("",)) -> bool:
    """Whether the requirement's marker holds here (for one of `extras`)."""
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate({**default_environment(), "extra": extra}) for extra in extras
    )


def here(lock: Path) -> dict[str, str]:
    """name -> version of the entries that apply to this Python and platform."""
    return {name: version for name, version, req in pins(lock) if applies(req)}


def test_the_runtime_lock_is_the_dev_lock_without_the_tools() -> None:
    dev = {(n, v, str(r.marker)) for n, v, r in pins(DEV_LOCK)}
    runtime = {(n, v, str(r.marker)) for n, v, r in pins(RUNTIME_LOCK)}
    assert runtime < dev
    assert {"moto", "pytest", "pytest-xdist", "uv"} <= {n for n, *_ in dev - runtime}


def test_the_lock_satisfies_what_the_package_asks_for() -> None:
    locked = here(DEV_LOCK)
    for line in importlib.metadata.requires(PROJECT) or []:
        requirement = Requirement(line)
        if not applies(requirement, ("", "dev", "bench")):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} (setup.py) is not in the lock: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{name}=={locked[name]} in the lock does not satisfy {requirement}: make lock"
        )


def test_the_environment_of_the_suite_is_exactly_the_lock() -> None:
    """What `make install` installed: every locked package at its version, nothing else."""
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }
    installed.pop(PROJECT)
    assert installed == here(DEV_LOCK)


def test_make_install_and_the_image_install_the_lock_and_nothing_else() -> None:
    makefile = ROOT.joinpath("Makefile").read_text()
    assert "pip install --quiet --require-hashes --no-deps -r requirements/dev.txt" in makefile
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in makefile
    dockerfile = ROOT.joinpath("Dockerfile").read_text().replace("\\\n", " ")
    installs = re.findall(r"pip install [^&\n]*", dockerfile)
    assert [" ".join(i.split()) for i in installs] == [
        "pip install --require-hashes --no-deps -r requirements/runtime.txt",
        "pip install --no-deps --no-build-isolation .",
    ]
    assert "!requirements/runtime.txt" in ROOT.joinpath(".dockerignore").read_text().split()
