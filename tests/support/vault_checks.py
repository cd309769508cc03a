"""What an operator checks in a bucket after a run, computed from git and S3 directly (never
with the code under test): `tree/` holds exactly HEAD's blobs, and archive runs in processes
of their own that a test can kill."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3

from tests.support.servers import REPO_ROOT

ENCODED = "tree/.repovault/encoded/"


def s3():
    return boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])


def read_json(bucket: str, key: str) -> dict:
    return json.loads(s3().get_object(Bucket=bucket, Key=key)["Body"].read())


def encoded_key(path: bytes) -> str:
    """The scheme of docs/storage.md for a path S3 cannot take as a key."""
    return ENCODED + hashlib.sha256(path).hexdigest()


def head_blobs(git_dir: Path, commit: str) -> dict[bytes, tuple[str, str]]:
    """path bytes -> (mode, blob sha) of every file of `commit` (submodules left out)."""
    raw = subprocess.run(
        ["git", "ls-tree", "-r", "-z", "--full-tree", commit],
        cwd=git_dir,
        check=True,
        capture_output=True,
    ).stdout
    blobs = {}
    for record in filter(None, raw.split(b"\0")):
        meta, _, path = record.partition(b"\t")
        mode, kind, sha = meta.decode().split()
        if kind == "blob":
            blobs[path] = (mode, sha)
    return blobs


def blob_contents(git_dir: Path, shas: set[str]) -> dict[str, bytes]:
    order = sorted(shas)
    out = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=git_dir,
        input="".join(f"{sha}\n" for sha in order).encode(),
        check=True,
        capture_output=True,
    ).stdout
    contents, pos = {}, 0
    for sha in order:
        end = out.index(b"\n", pos)
        size = int(out[pos:end].split()[2])
        contents[sha] = out[end + 1 : end + 1 + size]
        pos = end + 1 + size + 1
    return contents


def tree_objects(bucket: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    """key -> (content, metadata) of every object under `tree/`."""
    client = s3()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="tree/")
    found = {}
    for page in pages:
        for item in page.get("Contents", []):
            obj = client.get_object(Bucket=bucket, Key=item["Key"])
            found[item["Key"]] = (obj["Body"].read(), obj["Metadata"])
    return found


def assert_tree_is_head(bucket: str, git_dir: Path) -> dict:
    """Every object under `tree/` holds exactly a blob of the HEAD `latest.json` names, with
    its mode and blob id in metadata, and nothing else is there. Returns that manifest."""
    pointer = read_json(bucket, "latest.json")
    manifest = read_json(bucket, pointer["manifest"])
    blobs = head_blobs(git_dir, manifest["head_commit"])
    contents = blob_contents(git_dir, {sha for _, sha in blobs.values()})
    stored = tree_objects(bucket)
    expected = set()
    for path, (mode, sha) in blobs.items():
        try:
            plain = "tree/" + path.decode("utf-8")
        except UnicodeDecodeError:
            plain = ""
        key = plain if plain in stored else encoded_key(path)
        assert key in stored, f"HEAD's file {path!r} is not in tree/"
        content, metadata = stored[key]
        assert content == contents[sha], f"{key} does not hold HEAD's blob of {path!r}"
        assert (metadata.get("git-mode"), metadata.get("git-blob")) == (mode, sha), key
        expected.add(key)
    assert set(stored) == expected, f"not in HEAD: {sorted(set(stored) - expected)[:5]}"
    return manifest


def start_archive(url: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """An archive of `url` in its own process (and process group, git included)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.archive_proc", url],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the run and every process it started: nothing gets to clean up."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
