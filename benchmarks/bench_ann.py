"""Approximate inner-product search libraries on hybridrec's own vectors.

Compares HNSW implementations for the serving snapshot's approximate retrieval:
**usearch**, **hnswlib** and **faiss-cpu** (``IndexHNSWFlat``), on the item rows of
trained models (the bundled MovieLens sample, and the synthetic catalogs of
``bench_serving.py``: 10k/100k/1M items, 64 components, features and indicators on both
sides). Every library indexes the same MIPS reduction (see
:mod:`hybridrec.serving.retrieval.ann`): item ``[q_i, b_i, sqrt(M^2 - |q_i, b_i|^2)]``,
query ``[q_u, 1, 0]``, squared L2, so the nearest item is the best-scoring one.

Per library and catalog it prints: build seconds (2 threads), index file MB, recall@10
against exact scoring (the model's own users with their training features; the top
``k`` of ``fetch`` candidates re-scored exactly, as serving does), median and p99
latency of one query at 1 thread, and the memory of a fresh process that loaded the
index and ran the queries (``/proc/self/smaps_rollup``: Rss, and Anonymous: heap that
each worker holds on its own, while mapped file pages are shared page cache).

Needs ``pip install hnswlib faiss-cpu`` beside hybridrec (which brings usearch).
Run: ``python benchmarks/bench_ann.py --sizes sample,10k,100k`` (``1m`` trains a 1M-item
model first: about 10 minutes). Vectors are cached under ``--cache``.
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

CONNECTIVITY = 16
EXPANSION_ADD = 128
LIBRARIES = ("usearch", "hnswlib", "faiss")


# -- vectors ------------------------------------------------------------------------------------


def vectors(size: str, cache: Path, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """``(item rows (n, d + 2) float32, user vectors (m, d + 2) float32)`` of a trained
    model: items ``[q_i, b_i, 1]``, users ``[q_u, 1, b_u]``."""
    items_path, users_path = cache / f"{size}-items.npy", cache / f"{size}-users.npy"
    if items_path.exists() and users_path.exists():
        return np.load(items_path), np.load(users_path)
    from hybridrec.model import HybridLightFM

    if size == "sample":
        from hybridrec.io.sample import load_sample

        s = load_sample()
        data = (s.interactions, s.user_features, s.item_features)
    else:
        from bench_serving import SIZES, synthetic

        data = synthetic(*SIZES[size])
    t0 = time.perf_counter()
    model = HybridLightFM(no_components=64, epochs=epochs, random_state=0).fit(*data, num_threads=2)
    print(f"  {size}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    items = model.item_factors()
    users = model.user_space_.entities.external
    rng = np.random.default_rng(0)
    picks = rng.choice(len(users), size=min(1000, len(users)), replace=False)
    uvecs = np.stack([model.user_vector(model.user_row(users[i])) for i in picks])
    cache.mkdir(parents=True, exist_ok=True)
    np.save(items_path, items)
    np.save(users_path, uvecs.astype(np.float32))
    return items, uvecs.astype(np.float32)


def reduce_items(items: np.ndarray) -> np.ndarray:
    x = items[:, :-1].astype(np.float64)  # [q_i, b_i]
    sq = np.einsum("ij,ij->i", x, x)
    extra = np.sqrt(np.maximum(sq.max() - sq, 0.0))
    return np.ascontiguousarray(np.column_stack([x, extra]).astype(np.float32))


def reduce_queries(users: np.ndarray) -> np.ndarray:
    q = np.zeros((len(users), users.shape[1]), dtype=np.float32)
    q[:, :-2] = users[:, :-2]
    q[:, -2] = 1.0
    return q


# -- libraries ------------------------------------------------------------------------------------


def build(lib: str, data: np.ndarray, path: Path) -> None:
    n, dim = data.shape
    if lib == "usearch":
        from usearch.index import Index

        index = Index(
            ndim=dim,
            metric="l2sq",
            dtype="f32",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
        )
        index.add(np.arange(n, dtype=np.uint64), data, threads=2)
        index.save(str(path))
    elif lib == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="l2", dim=dim)
        index.init_index(max_elements=n, ef_construction=EXPANSION_ADD, M=CONNECTIVITY)
        index.set_num_threads(2)
        index.add_items(data, np.arange(n))
        index.save_index(str(path))
    else:
        import faiss

        faiss.omp_set_num_threads(2)
        index = faiss.IndexHNSWFlat(dim, CONNECTIVITY)
        index.hnsw.efConstruction = EXPANSION_ADD
        index.add(data)
        faiss.write_index(index, str(path))


class Loaded:
    """A saved index loaded the way a serving worker would (mapped where possible)."""

    def __init__(self, lib: str, path: Path, dim: int, n: int):
        self.lib = lib
        if lib == "usearch":
            from usearch.index import Index

            self.index = Index.restore(str(path), view=True)
        elif lib == "hnswlib":
            import hnswlib

            self.index = hnswlib.Index(space="l2", dim=dim)
            self.index.load_index(str(path), max_elements=n)
            self.index.set_num_threads(1)
        else:
            import faiss

            faiss.omp_set_num_threads(1)
            self.index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)

    def search(self, query: np.ndarray, fetch: int, ef: int) -> np.ndarray:
        if self.lib == "usearch":
            self.index.expansion_search = ef
            return self.index.search(query, fetch, threads=1).keys.astype(np.int64)
        if self.lib == "hnswlib":
            self.index.set_ef(max(ef, fetch))
            return self.index.knn_query(query, k=fetch)[0][0].astype(np.int64)
        import faiss

        params = faiss.SearchParametersHNSW(efSearch=max(ef, fetch))
        return self.index.search(query[None, :], fetch, params=params)[1][0]


def memory() -> dict[str, int]:
    out = {}
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2 and parts[0].rstrip(":") in (
                "Rss",
                "Pss",
                "Private_Clean",
                "Private_Dirty",
                "Anonymous",
            ):
                out[parts[0].rstrip(":")] = int(parts[1]) // 1024
    out["Private"] = out.pop("Private_Clean", 0) + out.pop("Private_Dirty", 0)
    return out


def probe(lib: str, index_path: Path, cache: Path, size: str, efs, k, fetch) -> dict:
    """In a fresh process: load, query, measure (printed as one JSON line)."""
    items = np.load(cache / f"{size}-items.npy", mmap_mode="r")
    users = np.load(cache / f"{size}-users.npy")
    exact = np.load(cache / f"{size}-exact.npy")
    queries = reduce_queries(users)
    __import__({"usearch": "usearch.index", "hnswlib": "hnswlib", "faiss": "faiss"}[lib])
    before = memory()
    loaded = Loaded(lib, index_path, queries.shape[1], items.shape[0])
    out = {"base_mb": before}
    for ef in efs:
        times, hits = [], 0
        for n, q in enumerate(queries):
            t0 = time.perf_counter()
            rows = loaded.search(q, fetch, ef)
            rows = rows[rows >= 0]
            scores = items[rows] @ users[n]  # exact re-scoring of the candidates
            top = rows[np.argsort(-scores, kind="stable")[:k]]
            times.append(time.perf_counter() - t0)
            hits += len(np.intersect1d(top, exact[n]))
        out[ef] = {
            "recall": hits / (k * len(queries)),
            "p50_us": float(np.median(times)) * 1e6,
            "p99_us": float(np.percentile(times, 99)) * 1e6,
        }
    out["mem"] = memory()
    return out


def exact_top(items: np.ndarray, users: np.ndarray, k: int) -> np.ndarray:
    """``(m, k)`` rows of every user's exact top k (unordered)."""
    out = []
    for chunk in range(0, len(users), 100):
        scores = users[chunk : chunk + 100] @ np.asarray(items).T
        out.append(np.argpartition(-scores, k, axis=1)[:, :k])
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="sample,10k,100k")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/hybridrec-bench-ann"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--ef", default="64,128,256,512", help="search expansions to try")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--fetch", type=int, default=20, help="candidates re-scored exactly")
    parser.add_argument("--probe", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    efs = [int(e) for e in args.ef.split(",")]
    if args.probe:
        lib, index_path, cache, size = args.probe
        result = probe(lib, Path(index_path), Path(cache), size, efs, args.k, args.fetch)
        print(json.dumps(result))
        return
    rows = []
    for size in args.sizes.split(","):
        items, users = vectors(size, args.cache, args.epochs)
        data = reduce_items(items)
        np.save(args.cache / f"{size}-exact.npy", exact_top(items, users, args.k))
        print(f"{size}: {items.shape[0]} items, {len(users)} queries", flush=True)
        for lib in args.libraries.split(","):
            path = args.cache / f"{size}.{lib}"
            t0 = time.perf_counter()
            build(lib, data, path)
            seconds = time.perf_counter() - t0
            out = subprocess.run(
                [sys.executable, str(HERE), "--probe", lib, str(path)]
                + [str(args.cache), size]
                + ["--ef", args.ef, "--k", str(args.k), "--fetch", str(args.fetch)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            mem = result["mem"]
            base = result["base_mb"]
            for ef in efs:
                r = result[str(ef)]
                rows.append((size, lib, ef, seconds, path.stat().st_size / 2**20, r, mem, base))
                print(
                    f"  {lib:8s} ef {ef:4d}: build {seconds:6.1f} s, recall@10 "
                    f"{r['recall']:.4f}, p50 {r['p50_us']:7.0f} us, p99 {r['p99_us']:7.0f} us, "
                    f"rss {mem['Rss'] - base['Rss']} MB, private {mem['Private'] - base['Private']}"
                    f" MB, anonymous {mem['Anonymous'] - base['Anonymous']} MB",
                    flush=True,
                )
            path.unlink()
    print(
        "\n| catalog | library | ef | build s | file MB | recall@10 | p50 us | p99 us "
        "| +Rss MB | +Anonymous MB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, lib, ef, seconds, mb, r, mem, base in rows:
        print(
            f"| {size} | {lib} | {ef} | {seconds:.1f} | {mb:.0f} | {r['recall']:.4f} | "
            f"{r['p50_us']:.0f} | {r['p99_us']:.0f} | {mem['Rss'] - base['Rss']} | "
            f"{mem['Anonymous'] - base['Anonymous']} |"
        )


if __name__ == "__main__":
    main()
