# `python -m netstore.processes ...`: how the supervisor starts a child.
"""Run a child process of the daemon (see netstore.processes.main)."""

import sys

from netstore.processes.main import main

sys.exit(main(sys.argv[1:]))
