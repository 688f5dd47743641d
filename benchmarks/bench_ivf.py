"""hybridrec's k-means clusters (``ClusterIndex``) against faiss-cpu's ``IndexIVFFlat``.

Both are inverted files over the same item rows: k-means centroids, a query scans the
rows of its ``probes`` nearest clusters. Indexes compared, on the same rows and users:

- **ClusterIndex** (hybridrec, numpy): :func:`default_lists` clusters (2,000 at 1M)
  over the MIPS reduction :func:`reduce_items`, k-means on 64 sampled rows per cluster,
  10 iterations; files saved with ``save`` and loaded with ``load`` (memory-mapped);
- **faiss IVFFlat L2**: the same reduction, the same number of lists, faiss's own
  k-means (defaults: 256 sampled rows per list, 10 iterations);
- **faiss IVFFlat L2, 64/list**: the same with our training budget (64 rows per list);
- **faiss IVFFlat IP**: ``METRIC_INNER_PRODUCT`` directly on the un-reduced rows
  ``[q_i, b_i, 1]`` and user vectors ``[q_u, 1, b_u]``.

Every faiss index is written with ``write_index`` and read back the way a worker would,
``read_index(path, IO_FLAG_MMAP_IFC)``. Per index: build seconds (2 threads: BLAS for
ours, OpenMP for faiss; the reduction included), file MB, the heap a loaded index adds
to a fresh process (``/proc/self/smaps_rollup`` Anonymous: private to each worker;
mapped file pages are shared page cache), and per probes (4/8/16/32): recall@10 against
the exact scan after exact re-scoring (the best ``4 k`` candidates re-scored in float64,
as ``ClusterIndex.search`` does), p50/p99 µs of one query at 1 thread (the queries of
all indexes interleaved in one process, so the machine's noise hits them alike; the
median over ``--runs`` such processes), and
the same with **exclusions**: 200 "seen" rows per user (its exact top 20, so the
excluded rows are ones the index would otherwise return, and 180 random rows) against
the exact top 10 of the rest. ClusterIndex masks among the scanned rows and scans twice
as many clusters while too few remain; faiss gets ``SearchParametersIVF(sel=
IDSelectorNot(IDSelectorBatch(seen)))`` with the same doubling loop around it.

Needs ``pip install -e '.[bench]'`` (faiss-cpu). Run:
``python benchmarks/bench_ivf.py --items items.npy --users users.npy`` with the item
rows ``(n, d + 2)`` and user vectors ``(m, d + 2)`` of a trained model (float32), or
``--size 100k`` to train one as ``bench_ann.py`` does (cached under ``--cache``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from bench_ann import memory, vectors  # noqa: E402

from hybridrec.serving.retrieval import ClusterIndex, ExactScan, Query  # noqa: E402
from hybridrec.serving.retrieval.ann import reduce_items, reduce_query  # noqa: E402
from hybridrec.serving.retrieval.base import exact_top  # noqa: E402
from hybridrec.serving.retrieval.ivf import default_lists  # noqa: E402
from hybridrec.serving.retrieval.recall import exact_top_k  # noqa: E402

INDEXES = ("clusters", "faiss-l2", "faiss-l2-64", "faiss-ip")
LABELS = {
    "clusters": "ClusterIndex (numpy)",
    "faiss-l2": "faiss IVFFlat L2, reduced rows",
    "faiss-l2-64": "faiss IVFFlat L2, reduced, 64 rows/list",
    "faiss-ip": "faiss IVFFlat inner product, raw rows",
}
SEEN = 200  # excluded rows per user: its exact top 20 and 180 random rows


# -- build (parent, 2 threads) ----------------------------------------------------------------


def build(name: str, rows: np.ndarray, lists: int, path: Path) -> float:
    """Build ``name`` over ``rows``, save it at ``path``; build seconds (saving excluded)."""
    if name == "clusters":
        from threadpoolctl import threadpool_limits

        with threadpool_limits(2):
            t0 = time.perf_counter()
            index = ClusterIndex.build(rows, lists=lists)
            seconds = time.perf_counter() - t0
        path.mkdir(parents=True, exist_ok=True)
        index.save(path)
        return seconds
    import faiss

    faiss.omp_set_num_threads(2)
    t0 = time.perf_counter()
    if name == "faiss-ip":
        data = np.ascontiguousarray(rows)
        index = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(data.shape[1]), data.shape[1], lists, faiss.METRIC_INNER_PRODUCT
        )
    else:
        data, _ = reduce_items(rows)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(data.shape[1]), data.shape[1], lists)
        if name == "faiss-l2-64":
            index.cp.max_points_per_centroid = 64
    index.cp.seed = 0
    index.train(data)
    index.add(data)
    seconds = time.perf_counter() - t0
    faiss.write_index(index, str(path))
    return seconds


def size_mb(path: Path) -> float:
    files = path.iterdir() if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files) / 2**20


# -- search (child, 1 thread) -------------------------------------------------------------------


class FaissIVF:
    """A saved faiss IVF, mapped, searched like ``ClusterIndex.search``: ``4 k``
    candidates re-scored exactly; exclusions by an ``IDSelector``, probes doubled
    while fewer than ``min(k, eligible)`` rows remain, an exact scan past every list."""

    def __init__(self, rows: np.ndarray, path: Path, reduced: bool):
        import faiss

        self.faiss = faiss
        self.rows = rows
        self.index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        self.reduced = reduced
        self.probes = 16
        self.doubled = 0
        self._exact = ExactScan(rows)

    def search(self, query: Query, k: int):
        faiss = self.faiss
        masked = query.masked
        want = min(k, len(self.rows) - int(masked.size))
        q = reduce_query(query.vector) if self.reduced else query.vector
        q = q.reshape(1, -1)
        keep = faiss.IDSelectorBatch(masked) if masked.size else None
        sel = faiss.IDSelectorNot(keep) if keep is not None else None
        probes, lists = self.probes, self.index.nlist
        while probes < lists:
            params = faiss.SearchParametersIVF(nprobe=probes, sel=sel)
            found = self.index.search(q, 4 * k, params=params)[1][0]
            found = found[found >= 0]
            if found.size >= want:
                top = exact_top(self.rows, found, query.vector)
                return top.rows[:k]
            probes *= 2
            self.doubled += 1
        return self._exact.search(query, k).rows


class Ours:
    def __init__(self, rows: np.ndarray, path: Path):
        self.index = ClusterIndex.load(rows, path)

    @property
    def probes(self) -> int:
        return self.index.ef

    @probes.setter
    def probes(self, value: int) -> None:
        self.index.ef = value

    def search(self, query: Query, k: int):
        return self.index.search(query, k).rows


def probe(work: Path, names: list[str], probes: list[int], k: int, passes: int) -> dict:
    """Load every index (heap added by each), then time interleaved single queries."""
    rows = np.load(work / "items.npy", mmap_mode="r")
    users = np.load(work / "users.npy")
    exact = np.load(work / "exact.npy")
    seen = np.load(work / "seen.npy")
    exact_seen = np.load(work / "exact_seen.npy")
    import faiss  # noqa: F401  (its libraries' heap is not an index's)

    out: dict = {"mem": {}}
    loaded = {}
    for name in names:
        before = memory()
        if name == "clusters":
            loaded[name] = Ours(rows, work / name)
        else:
            loaded[name] = FaissIVF(rows, work / name, reduced=name != "faiss-ip")
        after = memory()
        out["mem"][name] = {key: after[key] - before[key] for key in ("Anonymous", "Rss")}
    for p in probes:
        for index in loaded.values():
            index.probes = p
        for masked in (False, True):
            times = {name: [] for name in names}
            hits = dict.fromkeys(names, 0)
            for rep in range(passes):
                for u, vector in enumerate(users):
                    query = Query(vector, seen[u]) if masked else Query(vector)
                    truth = exact_seen[u] if masked else exact[u]
                    turn = names[u % len(names) :] + names[: u % len(names)]  # who goes first
                    for name in turn:
                        index = loaded[name]
                        t0 = time.perf_counter()
                        found = index.search(query, k)
                        times[name].append(time.perf_counter() - t0)
                        if rep == 0:
                            hits[name] += len(np.intersect1d(found, truth))
            for name in names:
                out.setdefault(name, {})[f"{p}{'x' if masked else ''}"] = {
                    "recall": hits[name] / (k * len(users)),
                    "p50_us": float(np.median(times[name])) * 1e6,
                    "p99_us": float(np.percentile(times[name], 99)) * 1e6,
                }
    for name in names:
        out["mem"][name]["doubled"] = getattr(loaded[name], "doubled", None)
        out["mem"][name]["Rss_after"] = memory()["Rss"]
    return out


# -- main -----------------------------------------------------------------------------------------


def prepare(rows: np.ndarray, users: np.ndarray, k: int, work: Path) -> None:
    """Ground truth (the exact scan) without and with each user's seen rows excluded."""
    rng = np.random.default_rng(0)
    exact = exact_top_k(rows, users, k)
    top20 = exact_top_k(rows, users, 20)
    seen = []
    for t in top20:
        extra = rng.choice(len(rows), 2 * SEEN, replace=False)
        extra = extra[~np.isin(extra, t)][: SEEN - len(t)]
        seen.append(np.sort(np.concatenate([t, extra])))
    seen = np.stack(seen)
    scan = ExactScan(rows)
    exact_seen = np.stack([scan.search(Query(u, s), k).rows for u, s in zip(users, seen)])
    np.save(work / "items.npy", rows)
    np.save(work / "users.npy", users)
    np.save(work / "exact.npy", exact)
    np.save(work / "seen.npy", seen.astype(np.int64))
    np.save(work / "exact_seen.npy", exact_seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=Path, help="item rows .npy (n, d + 2) float32")
    parser.add_argument("--users", type=Path, help="user vectors .npy (m, d + 2) float32")
    parser.add_argument("--size", default="100k", help="without --items: bench_ann's catalogs")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/hybridrec-bench-ann"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/hybridrec-bench-ivf"))
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--indexes", default=",".join(INDEXES))
    parser.add_argument("--probes", default="4,8,16,32")
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the users")
    parser.add_argument("--runs", type=int, default=3, help="search processes (medians)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = args.indexes.split(",")
    probes = [int(p) for p in args.probes.split(",")]
    if args.probe:
        print(json.dumps(probe(args.work, names, probes, args.k, args.passes)))
        return
    if args.items:
        rows = np.ascontiguousarray(np.load(args.items), dtype=np.float32)
        users = np.load(args.users).astype(np.float32)
    else:
        rows, users = vectors(args.size, args.cache, epochs=20)
    users = users[: args.queries]
    args.work.mkdir(parents=True, exist_ok=True)
    prepare(rows, users, args.k, args.work)
    lists = default_lists(len(rows))
    print(f"{len(rows)} items, {len(users)} users, {lists} lists", flush=True)
    built = {}
    for name in names:
        seconds = build(name, rows, lists, args.work / name)
        built[name] = (seconds, size_mb(args.work / name))
        print(f"  {name}: built in {seconds:.1f} s, {built[name][1]:.0f} MB", flush=True)
    del rows
    runs = []
    for _ in range(args.runs):  # fresh processes; the timings' median over the runs
        out = subprocess.run(
            [sys.executable, str(HERE), "--probe", "--work", str(args.work), "--indexes"]
            + [args.indexes, "--probes", args.probes, "--passes", str(args.passes)]
            + ["--k", str(args.k)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    result = runs[0]
    for name in names:
        result["mem"][name]["Anonymous"] = max(r["mem"][name]["Anonymous"] for r in runs)
        for key, cell in result[name].items():
            for stat in ("p50_us", "p99_us"):
                cell[stat] = float(np.median([r[name][key][stat] for r in runs]))
    print(
        "\n| index | build s | file MB | heap a loaded index adds (Anonymous MB) "
        "| recall@10 at 4 / 8 / 16 / 32 probes | p50 / p99 µs at 4 / 8 / 16 / 32 "
        "| with 200 seen excluded: recall@10 | p50 µs |"
    )
    print("|---|---:|---:|---:|---|---|---|---|")
    for name in names:
        r = result[name]
        mem = result["mem"][name]
        print(
            f"| {LABELS[name]} | {built[name][0]:.1f} | {built[name][1]:.0f} | "
            f"{mem['Anonymous']} | "
            + " / ".join(f"{r[str(p)]['recall']:.4f}" for p in probes)
            + " | "
            + " / ".join(f"{r[str(p)]['p50_us']:.0f}/{r[str(p)]['p99_us']:.0f}" for p in probes)
            + " | "
            + " / ".join(f"{r[f'{p}x']['recall']:.4f}" for p in probes)
            + " | "
            + " / ".join(f"{r[f'{p}x']['p50_us']:.0f}" for p in probes)
            + " |"
        )
    if "clusters" in names:  # same-run ratios: < 1 is faster than ClusterIndex
        ours = result["clusters"]
        for name in names:
            if name != "clusters":
                r = result[name]
                ratios = [r[key]["p50_us"] / ours[key]["p50_us"] for key in ours]
                print(
                    f"p50 {name} / clusters at {', '.join(ours)}: "
                    + " ".join(f"{x:.2f}" for x in ratios)
                )
    print(
        "probes doubled because too few rows were left:",
        {n: result["mem"][n]["doubled"] for n in names},
    )


if __name__ == "__main__":
    main()
