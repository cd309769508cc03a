"""Object keys of HEAD's files under `tree/`, and which paths are safe where.

Git allows almost any byte in a path; S3, MinIO and file systems do not. A path is stored at
`tree/<path>` when every store can take that key unchanged, else at
`tree/.repovault/encoded/<hex sha256 of the path's bytes>`; `tree.json` maps each encoded path
to its key and keeps its exact bytes. One odd file therefore never blocks a backup.
"""

from __future__ import annotations

import functools
import hashlib
import re

TREE = "tree/"
ENCODED = ".repovault/encoded/"
MAX_KEY_BYTES = 1024  # S3's limit on a key's UTF-8 bytes
MAX_NAME_BYTES = 255  # one path component: MinIO and most file systems
# Characters S3 or MinIO refuse, mangle or cannot list in XML (1.0), and Windows separators.
_REFUSED = re.compile("[\x00-\x1f\x7f\\\\\ufffe\uffff]")
_GIT_DIR_NAMES = {".git", "git~1"}  # git's own folder, and its NTFS short name


def path_bytes(path: str) -> bytes:
    """The exact bytes git has for `path` (read with surrogateescape from `ls-tree -z`)."""
    return path.encode("utf-8", "surrogateescape")


def is_git_dir_name(name: str) -> bool:
    """`.git` as git itself recognises it: case-insensitive, trailing dots and spaces
    (NTFS), NTFS streams (`.git::$INDEX_ALLOCATION`), and the short name `git~1`."""
    return name.lower().split(":", 1)[0].rstrip(" .") in _GIT_DIR_NAMES


def unsafe_component(name: str) -> bool:
    """A path component no archive or checkout should write as is: empty, `.`, `..` (also
    padded with spaces, which MinIO trims) or a `.git` folder."""
    return name.strip() in ("", ".", "..") or is_git_dir_name(name)


def needs_encoding(path: str) -> bool:
    raw = path_bytes(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True  # S3 keys are UTF-8
    return (
        len(TREE) + len(raw) > MAX_KEY_BYTES
        or path.lower().startswith(".repovault/")  # reserved for encoded keys
        or _REFUSED.search(path) is not None
        or any(
            unsafe_component(part) or len(path_bytes(part)) > MAX_NAME_BYTES
            for part in path.split("/")
        )
    )


@functools.lru_cache(maxsize=1 << 17)
def tree_key(path: str) -> str:
    """The key of HEAD's file `path` under `tree/` (cached: a run asks for each key three
    times, planning, uploading and writing `tree.json`, and a large HEAD has 10^5 files)."""
    if needs_encoding(path):
        return f"{TREE}{ENCODED}{hashlib.sha256(path_bytes(path)).hexdigest()}"
    return TREE + path
