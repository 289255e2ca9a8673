# netstore/__main__.py - `python -m netstore` runs the command line.
"""Entry point for ``python -m netstore``."""

import sys

from netstore.cli import main

sys.exit(main())
