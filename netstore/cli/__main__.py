# netstore/cli/__main__.py - `python -m netstore.cli` runs the command line, as
# `python -m netstore` does.
"""Entry point for ``python -m netstore.cli``."""

import sys

from netstore.cli import main

sys.exit(main())
