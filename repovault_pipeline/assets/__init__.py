from .archive import repo_archive
from .checks import restorable
from .stats import vault_stats

__all__ = ["repo_archive", "restorable", "vault_stats"]
