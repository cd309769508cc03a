from .archive import repo_archive

__all__ = ["repo_archive"]
