"""Which `tree/` key a path gets: the scheme of docs/storage.md, checked path by path."""

from __future__ import annotations

import hashlib

import pytest

from repovault_pipeline.core.vault.treekeys import tree_key


def encoded(raw: bytes) -> str:
    return "tree/.repovault/encoded/" + hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    "path",
    [
        "README.md",
        "src/app/main.py",
        "docs/ünïcødé 名前.md",
        ".github/workflows/ci.yml",
        "a/.gitignore",
        "...",
        "x/.gitx/y",
        "n" * 255,
        "tree/looks/like/a/key",
    ],
)
def test_paths_every_store_takes_keep_their_name(path: str) -> None:
    assert tree_key(path) == "tree/" + path


@pytest.mark.parametrize(
    "raw",
    [
        b"new\nline",
        b"tab\there",
        b"bell\x07",
        b"del\x7f",
        b"back\\slash",
        b"caf\xe9",  # Latin-1, not UTF-8
        b"..",
        b"a/../b",
        b"a/./b",
        b" .. ",
        b".git/config",
        b"sub/.GIT/hooks/x",
        b".git./config",
        b"git~1/config",
        b".repovault/encoded/0000",
        b"n" * 256,
        ("d" * 200 + "/").encode() * 6 + b"f",  # a key over 1,024 bytes
        "nonchar\ufffe".encode(),
    ],
)
def test_paths_a_store_cannot_take_get_the_encoded_key(raw: bytes) -> None:
    assert tree_key(raw.decode("utf-8", "surrogateescape")) == encoded(raw)
