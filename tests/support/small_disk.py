"""A real small disk for tests of "disk full": a tmpfs of a few hundred kB mounted on a folder.

Mounting needs root (or CAP_SYS_ADMIN); where it is not allowed the test is skipped with the
reason, and the pure tests of the error mapping (tests/core/test_disk_full.py) still run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(path: Path, size_kb: int) -> Iterator[Path]:
    """`path` on a tmpfs of `size_kb` kB for as long as the block runs."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()[:200]}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
