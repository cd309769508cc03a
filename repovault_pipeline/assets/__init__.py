from .archive import IN_MEMORY, repo_archive
from .checks import restorable
from .metadata import repo_metadata
from .stats import vault_stats

__all__ = ["IN_MEMORY", "repo_archive", "repo_metadata", "restorable", "vault_stats"]
