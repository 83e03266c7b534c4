"""The garbage collector of a long-running process, set for a service's heap.

A request or an event allocates thousands of short-lived objects, so with CPython's default
thresholds (700, 10, 10) the youngest generation is collected hundreds of times a second and
every tenth of those also sweeps the middle one; and each full collection walks every object
the process holds: the imported modules, the applications, the aggregate caches. Measured in
two `ledger serve` processes of benchmarks/topology.py (one run, 1,200 recharges): 450 young
collections each, middle ones up to 28 ms, and three full ones of 194 ms and 977 ms, every
request in flight held behind each.

So once a process has started, what start-up made is frozen (`gc.freeze`: kept out of every
later collection, it is never garbage) and the young generation is collected every 20,000
allocations: the short-lived objects are still freed by reference counting as before; only
cycles wait a little longer to be found."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000


def settle_heap() -> None:
    """Call once start-up is done: collect, freeze what is left, collect young less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
