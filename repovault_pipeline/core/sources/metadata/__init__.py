"""Forge metadata of one repository, kept beside its git snapshots: issues and pull/merge
requests with their comments and reviews, labels, milestones, releases and release assets.

Split by job: `fetch` reads what changed from the forge (through `sources.forges`), `layout`
names the objects in the bucket, `archive` commits a metadata snapshot by the vault's rules,
`restore` replays the snapshots into files. Layout in the repository's bucket
(docs/contract.md, "Forge metadata"):

    metadata/snapshots/<id>/<kind>.jsonl   records new or changed since the previous snapshot
    metadata/snapshots/<id>/index.json     every record known at this snapshot: kind -> id -> digest
    metadata/snapshots/<id>/manifest.json  written last: the commit marker
    metadata/latest.json                   the newest complete metadata snapshot
    metadata/assets/<sha256>               release asset contents, content-addressed
"""
