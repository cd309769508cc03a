"""`repovault`, the command line: one module per group of commands, each registering its
subcommands beside their handlers; `main` (the console script `repovault_pipeline.cli:main`)
builds the parser from them and turns every failure into one line and an exit code
(`explain`, which the HTTP API uses too)."""

from .main import explain, main

__all__ = ["explain", "main"]
