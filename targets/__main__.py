"""`python -m targets [FAMILY...]`: build the target families, as `connbench build` does, from targets/ alone.

The Node image builds its families this way before the harness (benchmarks/) is copied in, so a change to
the harness keeps that layer of the image.
"""

import sys

from targets.families import build_all

sys.exit(build_all(sys.argv[1:]))
