"""Bundle chains (docs/storage.md, "Incremental bundles"): a snapshot whose manifest names a
`base` stores only the objects new since that snapshot's refs; its chain is the full bundle it
rests on and every incremental one after it, oldest first. Here: walking a chain
(`chain_of`), what retention must keep for the snapshots it keeps (`chain_needs`), and whether
a chain's bundles look whole from one listing (`chain_damage`).
"""

from __future__ import annotations

from collections.abc import Iterable

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.records import Manifest


class BrokenChain(ArchiveError):
    """A link of a snapshot's chain is gone or unusable: the message names that snapshot."""


def chain_of(reader: SnapshotReader[Manifest], manifest: Manifest) -> list[Manifest]:
    """The manifests a restore of `manifest` fetches, the full bundle's first, `manifest`
    last. A base without a manifest, or one not older than the snapshot building on it (a
    loop: ids sort in time), is a BrokenChain naming it."""
    links = [manifest]
    while (base := links[-1].base) is not None:
        child = links[-1].snapshot_id
        if base >= child:
            raise BrokenChain(
                f"snapshot {base} (base of {child}) is not older than the snapshot building on "
                "it: the chain loops"
            )
        found = reader.manifest(base)
        if found is None:
            raise BrokenChain(
                f"snapshot {base} (base of {child}) has no manifest.json: the chain of "
                f"snapshot {manifest.snapshot_id} is broken there"
            )
        links.append(found)
    links.reverse()
    return links


def chain_needs(reader: SnapshotReader[Manifest], kept: Iterable[str]) -> set[str]:
    """Every snapshot the chains of the `kept` ones rest on: retention keeps them until no
    kept snapshot builds on them. A base already gone ends its chain (nothing more to keep)."""
    needed: set[str] = set()
    for snapshot_id in kept:
        manifest = reader.manifest(snapshot_id)
        while manifest is not None and manifest.base is not None:
            if manifest.base in needed or manifest.base >= manifest.snapshot_id:
                break  # the rest of this chain is counted already (or it loops)
            needed.add(manifest.base)
            manifest = reader.manifest(manifest.base)
    return needed


def chain_damage(reader: SnapshotReader[Manifest], links: list[Manifest]) -> str | None:
    """What one listing of each link's bundle tells: a bundle missing, or not the size its
    manifest records, named by its snapshot. None: every link looks whole."""
    last = links[-1].snapshot_id
    for link in links:
        bundle = link.bundle
        listed = reader.store.list(reader.bucket, bundle.key)
        found = next((i for i in listed if i.key == bundle.key), None)
        which = "its bundle" if link.snapshot_id == last else _link(link, links)
        if found is None:
            return f"{which} {bundle.key} is missing"
        if found.size != bundle.size:
            return f"{which} is {found.size} bytes but its manifest says {bundle.size}"
    return None


def _link(link: Manifest, links: list[Manifest]) -> str:
    """How a message names a base: `the bundle of snapshot X (base of Y)`."""
    child = links[links.index(link) + 1].snapshot_id
    return f"the bundle of snapshot {link.snapshot_id} (base of {child})"
