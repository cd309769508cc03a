"""The record of requests in the lineage database: tables, migrations, queries, stats, verification
checks."""
