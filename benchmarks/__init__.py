"""`make bench`: RepoVault against the raw git + boto3 tools and the per-file approach.

`python -m benchmarks.run --help`; the results land in benchmarks/RESULTS.md and results.png.
"""
