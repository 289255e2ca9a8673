# netstore/processes - `netstore serve` as a supervisor of child processes: the
# channel between them, the child side of each service (iSCSI workers, the
# switch process), the supervisor side (starting, watching, restarting
# children) and the iSCSI acceptor that hands each connection to its worker.
"""Service processes of the daemon.

- :mod:`channel`: messages and descriptors between supervisor and child.
- :mod:`child`: the supervisor's side: start, watch, restart, stop a child.
- :mod:`main`: a child's entry point (``python -m netstore.processes``).
- :mod:`worker`: an iSCSI worker: the targets it owns, connections handed in.
- :mod:`switches`: the switch process: every configured switch.
- :mod:`acceptor`: the iSCSI portals: the first Login Request picks the worker.
- :mod:`logs`: the log format every process writes to stderr.
"""
