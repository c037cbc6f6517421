#!/usr/bin/python3
"""dask_bench.py: the libmodal workloads on Dask distributed, for comparison.

Runs with Debian's python3-distributed and python3-numpy (/usr/bin/python3).
A LocalCluster with process workers (n_workers=2, threads_per_worker=1,
processes=True) serves every workload except the cold starts:

  warm      client.submit(noop, pure=False).result(), median and p99
  map       client.map(noop, range(N), pure=False) then client.gather
  array     numpy uint8 array round trip: submit(echo, a).result(), where
            echo returns a copy with the first and last bytes inverted
  cold      (a) worker: time from asking a running cluster for one more
                worker process (cluster.scale) until a task pinned to that
                new worker has returned, minus the warm median;
            (b) cluster: LocalCluster(n_workers=1) + Client + one task,
                from nothing (scheduler and worker start included)

Output: "metric<TAB>value<TAB>unit" lines on stdout, nothing else there.
Usage: dask_bench.py [--calls N] [--map-n N] [--max-1gib-seconds S]

The 1 GiB round trip runs only when 16 times the measured 64 MiB round
trip fits in --max-1gib-seconds; otherwise it is reported as skipped with
that projection ("dask.array_1GiB.skipped<TAB>projected seconds<TAB>s").
"""
import argparse
import logging
import os
import statistics
import sys
import time
import warnings


def emit(metric, value, unit):
    print(f"dask.{metric}\t{value:.6g}\t{unit}", flush=True)


def quantile(v, q):
    v = sorted(v)
    i = int(q * (len(v) - 1) + 0.5)
    return v[min(i, len(v) - 1)]


def noop(*args):
    return None


def echo(a):
    b = a.copy()
    b[0] ^= 0xFF
    b[-1] ^= 0xFF
    return b


def bench_warm(client, calls):
    for _ in range(200):
        client.submit(noop, pure=False).result()
    t = []
    for _ in range(calls):
        t0 = time.perf_counter()
        client.submit(noop, pure=False).result()
        t.append(time.perf_counter() - t0)
    med = quantile(t, 0.5)
    emit("warm.median", med * 1e6, "us")
    emit("warm.p99", quantile(t, 0.99) * 1e6, "us")
    return med


def bench_map(client, n):
    client.gather(client.map(noop, range(1000), pure=False))  # warm
    t0 = time.perf_counter()
    futures = client.map(noop, range(n), pure=False)
    results = client.gather(futures)
    dt = time.perf_counter() - t0
    assert len(results) == n
    del futures, results
    emit("map.inputs", n, "inputs")
    emit("map.rate", n / dt, "inputs/s")


def array_once(client, np, size):
    a = (np.arange(size, dtype=np.uint64) * 31).astype(np.uint8)
    want_first, want_last = a[0] ^ 0xFF, a[-1] ^ 0xFF
    t0 = time.perf_counter()
    b = client.submit(echo, a, pure=False).result()
    dt = time.perf_counter() - t0
    if len(b) != size or b[0] != want_first or b[-1] != want_last:
        raise SystemExit(f"dask_bench: echo returned wrong data for {size} bytes")
    return dt


def bench_array(client, np, size, reps, label, warm=True):
    if warm:
        array_once(client, np, min(size, 1 << 20))
    t = [array_once(client, np, size) for _ in range(reps)]
    med = quantile(t, 0.5)
    emit(f"array_{label}.ms", med * 1e3, "ms")
    emit(f"array_{label}.bw", 2 * size / med / 1e9, "GB/s")
    return med


def bench_cold_worker(cluster, client, warm_median, reps):
    """One more worker process on a running cluster, until it ran a task."""
    t = []
    for i in range(reps):
        before = set(client.scheduler_info()["workers"])
        n = len(before)
        t0 = time.perf_counter()
        cluster.scale(n + 1)
        while True:
            new = set(client.scheduler_info()["workers"]) - before
            if new:
                break
            time.sleep(0.001)
        addr = new.pop()
        client.submit(noop, i, pure=False, workers=[addr],
                      allow_other_workers=False).result()
        t.append(time.perf_counter() - t0)
        cluster.scale(n)
        while len(client.scheduler_info()["workers"]) > n:
            time.sleep(0.05)
    med = quantile(t, 0.5)
    emit("cold.first_call", med * 1e3, "ms")
    emit("cold.median", (med - warm_median) * 1e3, "ms")
    emit("cold.n", reps, "starts")


def bench_cold_cluster(LocalCluster, Client, reps):
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.submit(noop, pure=False).result()
            t.append(time.perf_counter() - t0)
    emit("cold_cluster.median", quantile(t, 0.5) * 1e3, "ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--map-n", type=int, default=100000)
    ap.add_argument("--max-1gib-seconds", type=float, default=120.0)
    ap.add_argument("--array-reps", type=int, default=3)
    ap.add_argument("--cold-reps", type=int, default=5)
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    try:
        import numpy as np
        from distributed import Client, LocalCluster
        import dask
    except ImportError as e:
        print(f"# dask_bench: {e}: install python3-distributed and python3-numpy",
              file=sys.stderr)
        return 2
    print(f"# dask {dask.__version__}, numpy {np.__version__}, "
          f"python {sys.version.split()[0]}", file=sys.stderr)
    # No spilling to disk and no memory-based pausing: measure the transport.
    dask.config.set({"distributed.worker.memory.target": False,
                     "distributed.worker.memory.spill": False,
                     "distributed.worker.memory.pause": False,
                     "distributed.worker.memory.terminate": False,
                     "distributed.admin.large-graph-warning-threshold": "100GB"})

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit=0) as cluster, \
            Client(cluster) as client:
        warm = bench_warm(client, args.calls)
        bench_map(client, args.map_n)
        bench_array(client, np, 1 << 20, 7, "1MiB")
        t64 = bench_array(client, np, 64 << 20, args.array_reps, "64MiB")
        projected = 16 * t64
        if projected <= args.max_1gib_seconds:
            bench_array(client, np, 1 << 30, 1, "1GiB", warm=False)
        else:
            emit("array_1GiB.skipped", projected, "s")
        bench_cold_worker(cluster, client, warm, args.cold_reps)
    bench_cold_cluster(LocalCluster, Client, 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
