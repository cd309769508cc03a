from .archive import repo_archive
from .checks import restorable

__all__ = ["repo_archive", "restorable"]
