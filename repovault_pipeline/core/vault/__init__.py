"""The object store and what lives in it: snapshots, their writer and readers, leases, LFS, git,
restore and verify."""
