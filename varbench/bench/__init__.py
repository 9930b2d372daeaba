"""`varbench bench`: the benchmark harness (harness: rows against the FLOP floor, bench.json;
cost: GPU-hours of whole protocols; components: the built-in components). Components are
found through the entry-point group `varbench.benchmarks`.
"""
