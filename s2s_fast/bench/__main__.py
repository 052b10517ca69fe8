"""``python -m s2s_fast.bench [options]``: the same as ``s2s-fast bench [options]``."""

import sys

from ..cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
