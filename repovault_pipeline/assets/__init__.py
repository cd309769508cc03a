from .archive import IN_MEMORY, repo_archive

__all__ = ["IN_MEMORY", "repo_archive"]
