"""Search latency of the embedded engines, and one query's encode + search, idle and with both cores busy.

    .venv/bin/python benchmarks/bench_store.py [--sizes 10000 100000 1000000] [--queries 50] [--real 10000]
    .venv/bin/python benchmarks/bench_store.py --sizes 1000000 --real 0 --engines local --local-memory
    .venv/bin/python benchmarks/bench_store.py --sizes 2000 --queries 10 --real 500     # smoke run

For each size, in this one process (the machines are noisy, so only ratios within one run mean much):

- search alone, top-10 cosine: Qdrant Edge exact, Edge after ``optimize()`` (HNSW), and qdrant-client's local
  mode (the embedded engine before Edge, through the same ``Store`` interface); p50 and p99 over ``--queries``;
- HNSW recall@10 against exact search on the same shard, on ``--real`` real embeddings (segments of the
  training manuals in ``data/docs`` embedded by the shipped model, if present) and on the random vectors.

Sizes past ``--real`` are filled with random unit vectors (only the search cost matters there). Then, at
100,000 points (or the largest size), one short text query's encode + search (Edge HNSW), idle and while two
busy-loop processes keep both cores busy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

import vc2l_retriever
from vc2l_retriever import index as vindex
from vc2l_retriever.store import Record, ServerStore, Store, open_store

QUERIES = ["how do I change the default printer", "configure a network interface", "undo the last commit",
           "plot a matrix as an image", "escape special characters in a regular expression"]


def percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def timed_calls(fn: Callable[[Any], Any], args: Sequence[Any]) -> list[float]:
    fn(args[0])  # warm-up
    out = []
    for a in args:
        start = time.perf_counter()
        fn(a)
        out.append(time.perf_counter() - start)
    return out


def real_embeddings(model: Any, n: int) -> np.ndarray:
    """``n`` embeddings of documentation segments (data/docs), or an empty array if the data is not built."""
    path = Path("data/docs/train.jsonl")
    if n <= 0 or not path.is_file():
        return np.zeros((0, model.get_embedding_dimension()), np.float32)
    texts: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            texts += [t.strip()[:400] for t in json.loads(line)["text"] if len(t.strip()) > 20]
            if len(texts) >= n:
                break
    start = time.perf_counter()
    vectors = model.encode(texts[:n], batch_size=64, convert_to_numpy=True, show_progress_bar=False)
    print(f"embedded {len(vectors)} documentation segments in {time.perf_counter() - start:.0f} s")
    return vectors.astype(np.float32)


def fill(store: Store, vectors: np.ndarray, start: int, batch: int = 2048) -> float:
    """Upsert ``vectors`` as points ``start...``; returns seconds."""
    t = time.perf_counter()
    for lo in range(0, len(vectors), batch):
        chunk = vectors[lo:lo + batch]
        store.upsert([Record(str(uuid.UUID(int=start + lo + i)), {"metadata": {"source": f"doc{(lo + i) % 97}"}},
                             v.tolist()) for i, v in enumerate(chunk)])
    return time.perf_counter() - t


def unit_random(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall_at_10(store: Any, queries: np.ndarray) -> float:
    """HNSW top-10 against the same shard's exact top-10."""
    from qdrant_edge import Query, QueryRequest, SearchParams

    hits = 0
    for q in queries:
        approx = store.shard.query(QueryRequest(limit=10, query=Query.Nearest(q.tolist())))
        exact = store.shard.query(QueryRequest(limit=10, query=Query.Nearest(q.tolist()),
                                               params=SearchParams(exact=True)))
        hits += len({p.id for p in approx} & {p.id for p in exact})
    return hits / (10 * len(queries))


def bench_edge(vectors: np.ndarray, queries: np.ndarray, real_queries: np.ndarray, folder: Path) -> dict:
    """Qdrant Edge: upsert, exact search, ``optimize()`` (HNSW), HNSW search and its recall@10."""
    row: dict[str, Any] = {}
    edge = open_store(folder, name="bench")
    edge.create(vectors.shape[1], {})
    row["edge_upsert_s"] = fill(edge, vectors, 0)
    row["edge_exact"] = percentiles(timed_calls(lambda q: edge.query(q.tolist(), 10), queries))
    t = time.perf_counter()
    edge.optimize()
    row["optimize_s"] = time.perf_counter() - t
    row["edge_hnsw"] = percentiles(timed_calls(lambda q: edge.query(q.tolist(), 10), queries))
    row["hnsw_indexed"] = edge.shard.info().indexed_vectors_count  # 0: segments below the indexing threshold
    row["recall_random"] = recall_at_10(edge, queries)
    if len(real_queries):  # other segments' embeddings as queries: real neighbourhoods among the real points
        row["recall_real"] = recall_at_10(edge, real_queries)
    edge.close()
    return row


def bench_local(vectors: np.ndarray, queries: np.ndarray, folder: Path, in_memory: bool) -> dict:
    """qdrant-client's local mode (on disk, or in memory: the same brute-force search, a faster upsert)."""
    client = QdrantClient(location=":memory:") if in_memory else QdrantClient(path=str(folder))
    local = ServerStore(client, "bench")
    local.create(vectors.shape[1], {})
    row = {"local_upsert_s": fill(local, vectors, 0), "local_in_memory": in_memory}
    row["local"] = percentiles(timed_calls(lambda q: local.query(q.tolist(), 10), queries))
    local.close()
    return row


def bench_size(n: int, real: np.ndarray, real_queries: np.ndarray, n_queries: int, tmp: Path,
               engines: Sequence[str], local_memory: bool) -> dict:
    dim = real.shape[1]
    vectors = np.concatenate([real[:n], unit_random(max(0, n - len(real)), dim, seed=n)])
    queries = unit_random(n_queries, dim, seed=1)
    row: dict[str, Any] = {"points": n, "real": min(n, len(real))}
    if "edge" in engines:
        row.update(bench_edge(vectors, queries, real_queries, tmp / f"edge{n}"))
    if "local" in engines:
        row.update(bench_local(vectors, queries, tmp / f"local{n}", local_memory))
    print(json.dumps(row), flush=True)
    return row


def busy_cores(n: int = 2) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def bench_query(model: Any, points: int, dim: int, tmp: Path, n: int) -> dict:
    """One short text query: encode + Edge HNSW search, idle and with both cores busy."""
    store = open_store(tmp / "query", name="bench")
    store.create(dim, {})
    fill(store, unit_random(points, dim, seed=7), 0)
    store.optimize()
    texts = [QUERIES[i % len(QUERIES)] + f" {i}" for i in range(n)]
    out: dict[str, Any] = {"points": points}
    for label in ("idle", "busy"):
        hogs = busy_cores() if label == "busy" else []
        try:
            time.sleep(0.5 if hogs else 0)
            out[label] = percentiles(timed_calls(lambda text: store.query(vindex.encode_query(model, text), 10),
                                                 texts))
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    store.close()
    print(json.dumps(out), flush=True)
    return out


def _ms(pair: tuple[float, float] | None) -> str:
    return f"{pair[0]:.1f} / {pair[1]:.1f} ms" if pair else "not run"


def print_table(rows: list[dict]) -> None:
    print("\n| points | Edge exact p50 / p99 | Edge HNSW p50 / p99 | local mode p50 / p99 | HNSW vs local (p50) "
          "| recall@10 real / random | optimize (HNSW vectors) |")
    print("|---:|---|---|---|---|---|---|")
    for r in rows:
        hnsw, local = r.get("edge_hnsw"), r.get("local")
        ratio = f"{local[0] / hnsw[0]:.0f}x faster" if local and hnsw else "n/a"
        real_recall = f"{r['recall_real']:.3f}" if "recall_real" in r else "n/a"
        recall = f"{real_recall} / {r['recall_random']:.3f}" if "recall_random" in r else "n/a"
        build = f"{r['optimize_s']:.1f} s ({r['hnsw_indexed']:,})" if "optimize_s" in r else "n/a"
        print(f"| {r['points']:,} | {_ms(r.get('edge_exact'))} | {_ms(hnsw)} | {_ms(local)} | {ratio} | {recall} "
              f"| {build} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--real", type=int, default=10_000, help="real embeddings among the points (recall)")
    parser.add_argument("--engines", nargs="+", choices=["edge", "local"], default=["edge", "local"])
    parser.add_argument("--local-memory", action="store_true",
                        help="local mode in memory (\":memory:\"; its search is the same brute force, its upsert skips "
                             "SQLite) so that a million points load in minutes")
    parser.add_argument("--model", default=None, help="VC2L model (default: the shipped default)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    model = vc2l_retriever.load(args.model, device="cpu")
    dim = model.get_embedding_dimension()
    both = real_embeddings(model, args.real + args.queries)
    real, real_queries = both[:-args.queries], both[-args.queries:]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            rows.append(bench_size(n, real, real_queries, args.queries, Path(tmp), args.engines, args.local_memory))
        query = bench_query(model, min(100_000, max(args.sizes)), dim, Path(tmp), max(args.queries, 40)) \
            if "edge" in args.engines else None
    print_table(rows)
    if query:
        print(f"\nencode + search, one short query, {query['points']:,} points (Edge HNSW): idle p50 "
              f"{query['idle'][0]:.1f} ms / p99 {query['idle'][1]:.1f} ms; both cores busy p50 "
              f"{query['busy'][0]:.1f} ms / p99 {query['busy'][1]:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"sizes": rows, "query": query}, indent=1) + "\n")


if __name__ == "__main__":
    main()
