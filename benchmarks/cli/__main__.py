"""`python -m benchmarks.cli`: the `connbench` command without depending on PATH (targets start this way)."""

import sys

from benchmarks.cli import main

sys.exit(main())
