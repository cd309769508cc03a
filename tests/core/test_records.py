"""The vault's JSON documents as records (core/vault/records.py): what older writers wrote still
reads, what newer ones add is kept, and a record is written with the fields it always had."""

from __future__ import annotations

import json

from repovault_pipeline.core.vault.latest import read_latest
from repovault_pipeline.core.vault.records import (
    BundleRecord,
    LeaseRecord,
    LfsIndex,
    Manifest,
    TreeIndex,
    json_bytes,
)

OLD_MANIFEST = {  # a wiki's, or a code manifest written before `keep`, `lfs` and `head_ref`
    "repo_id": "github.com/octo/hello",
    "repo_url": "https://github.com/octo/hello.git",
    "snapshot_id": "20240101T000000Z-0123456789ab",
    "head_commit": "0123456789ab" * 3 + "0123",
    "default_branch": "main",
    "refs": {"refs/heads/main": "0123456789ab" * 3 + "0123"},
    "bundle": {"key": "snapshots/x/repo.bundle", "size": 12, "sha256": "ab" * 32},
    "created_at": "2024-01-01T00:00:00+00:00",
}


def test_an_older_manifest_reads_and_a_newer_field_is_kept() -> None:
    doc = {**OLD_MANIFEST, "written_by_a_newer_version": {"any": [1, 2]}}
    manifest = Manifest.model_validate_json(json.dumps(doc))
    assert (manifest.tree, manifest.lfs, manifest.keep, manifest.head_ref) == (
        None,
        None,
        None,
        None,
    )
    assert manifest.encryption is None and manifest.bundle.size == 12
    assert json.loads(json_bytes(manifest, exclude_unset=True)) == doc  # nothing lost or added


def test_a_manifest_is_written_with_the_fields_set_only() -> None:
    manifest = Manifest(
        repo_id="r",
        repo_url="u",
        snapshot_id="s",
        head_commit="h",
        head_ref=None,
        default_branch=None,
        refs={},
        bundle=BundleRecord(key="k", size=1, sha256="x"),
        created_at="c",
        request_id=None,
    )
    manifest.lfs = None  # a code snapshot that kept no LFS objects says so: `lfs: null`
    written = json.loads(json_bytes(manifest, exclude_unset=True))
    assert "lfs" in written and written["lfs"] is None and written["head_ref"] is None
    assert not {"encryption", "tree", "keep", "submodules"} & set(written)
    assert list(written) == sorted(written)  # keys sorted, as the vault always wrote them


def test_latest_json_reads_as_before() -> None:
    assert read_latest(None) is None
    assert read_latest(b"not json") is None
    assert read_latest(b'["a"]') is None
    assert read_latest(b'{"snapshot_id": 3}') is None  # not an id
    latest = read_latest(b'{"snapshot_id": "s", "fetched_at": "t"}')  # a metadata pointer
    assert latest is not None and latest.snapshot_id == "s" and latest.repo_id is None
    assert json.loads(json_bytes(latest, exclude_unset=True)) == {
        "snapshot_id": "s",
        "fetched_at": "t",
    }


def test_tree_lfs_and_lease_documents_read_with_their_defaults() -> None:
    index = TreeIndex.model_validate_json(
        b'{"files": {"a": {"mode": "100644", "sha": "x", "size": 1}}}'
    )
    assert index.files["a"].etag is None and index.written == 0.0
    assert "written" not in index.model_dump()  # the store's clock, never in the document
    assert LfsIndex.model_validate_json(b"{}").objects == {}
    lease = LeaseRecord.model_validate_json(b'{"state": "held", "owner": "o", "ttl_s": 20}')
    assert (lease.state, lease.ttl_s, lease.previous) == ("held", 20, None)
