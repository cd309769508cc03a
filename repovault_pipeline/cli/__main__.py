"""`python -m repovault_pipeline.cli`: the same command as the `repovault` console script."""

import sys

from .main import main

sys.exit(main())
