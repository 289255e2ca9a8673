# tools/benchnetem/ - the parts of tools/bench-netem (the executable, which
# keeps its options, main() and the tables): common.py (frames, statistics,
# Check and Section), peers.py (the sender and receiver processes, run as
# `bench-netem _send|_recv`), harness.py (the daemon and its CLI, flows across
# it, the Bench the sections share), impairments.py (sections 1-4: delay,
# loss, fates, seed), linkstate.py (6 and 7: updown, change), rate.py (5 and
# 8: isolation, rate). Imported with tools/ on sys.path, as benchkit is.
"""The parts of tools/bench-netem."""
