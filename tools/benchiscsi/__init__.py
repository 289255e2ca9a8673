# tools/benchiscsi/ - the parts of tools/bench-iscsi (the executable, which
# keeps its options and main()): model.py (the tests, a run's Sample),
# runs.py (a load process and its CPU window, iscsi-perf and qemu-img bench),
# figures.py (per-operation accounting, medians, the report), targets.py
# (netstore and tgt started, measured and stopped). Imported with tools/ on
# sys.path, as benchkit is.
"""The parts of tools/bench-iscsi."""
