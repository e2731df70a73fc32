"""``python -m asyncbench``: the command line."""

import sys

from asyncbench.cli import main

sys.exit(main())
