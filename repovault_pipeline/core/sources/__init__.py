"""What to archive: forges, tracked sources, refresh checks, trending, forge metadata, forget."""
