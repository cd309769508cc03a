from .archive import IN_MEMORY, repo_archive
from .metadata import repo_metadata

__all__ = ["IN_MEMORY", "repo_archive", "repo_metadata"]
