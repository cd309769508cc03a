from .archive import repo_archive
from .metadata import repo_metadata

__all__ = ["repo_archive", "repo_metadata"]
