"""Notifications: what an operator is told (failed and partial archives, unrestorable snapshots,
tracked sources that error, stale repositories, a daily summary), and sending it through Apprise.

The top floor of `core/`: it reads the rows of `lineage` and `sources` and never writes them."""
