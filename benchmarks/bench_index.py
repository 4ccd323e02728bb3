"""Indexing throughput and query latency of embedded Qdrant (not run in CI).

    .venv/bin/python benchmarks/bench_index.py --model PATH [--pages 200] [--points 100000] [--queries 200]
    .venv/bin/python benchmarks/bench_index.py --preset micro --pages 20 --points 2000 --queries 20   # smoke run

1. Generates ``--pages`` PDF pages (10-page documents with fpdf2; every third page has a figure) and indexes
   them into a fresh embedded Qdrant folder: pages/s, snippets/s, peak RSS, and the time shares of parsing
   (``ingest_file``), rendering, encoding (the ViT, rendering excluded) and upserting. The shares come from
   timers wrapped around those calls; the rest (hashing, payloads, ID lookups) is reported as "other".
2. Tops a second collection up to ``--points`` points with random unit vectors (upserted directly, since only
   the search cost matters) and measures query latency p50/p99 over ``--queries`` text queries: encode + search,
   and search alone. Embedded search is brute force, so latency grows linearly with the point count.
"""

from __future__ import annotations

import argparse
import functools
import resource
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import vc2l_retriever
from vc2l_retriever import index as vindex

WORDS = ("retrieval systems embed documents as vectors each snippet of a page such as a paragraph with its heading "
         "a caption and the figure it describes is drawn as pixels and encoded by one vision transformer").split()


def sentence(seed: int, n_words: int = 40) -> str:
    """A deterministic pseudo-sentence (varied so nothing is cached)."""
    return " ".join(WORDS[(seed * 7 + i * 3 + i * i) % len(WORDS)] for i in range(n_words)).capitalize() + "."


def make_corpus(folder: Path, pages: int) -> list[Path]:
    """Write ``pages`` PDF pages as 10-page documents; every third page carries a small figure."""
    from fpdf import FPDF

    figure = folder / "figure.png"
    Image.fromarray((np.indices((96, 128)).sum(0) % 32 * 8).astype(np.uint8)).convert("RGB").save(figure)
    files = []
    for doc_start in range(0, pages, 10):
        pdf = FPDF()
        for page in range(doc_start, min(doc_start + 10, pages)):
            pdf.add_page()
            pdf.set_font("Helvetica", "B", 14)
            pdf.cell(0, 10, f"Section {page}", new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Helvetica", size=11)
            for p in range(3):
                pdf.multi_cell(0, 6, sentence(page * 3 + p))
                pdf.ln(3)
            if page % 3 == 0:
                pdf.image(str(figure), w=60)
        files.append(folder / f"doc{doc_start // 10:04d}.pdf")
        pdf.output(str(files[-1]))
    figure.unlink()
    return files


def timed(fn: Callable[..., Any], bucket: str, totals: dict[str, float]) -> Callable[..., Any]:
    """Wrap ``fn`` so that its wall time adds to ``totals[bucket]``."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[bucket] += time.perf_counter() - start
    return wrapper


def bench_indexing(model: Any, folder: Path, index_dir: Path, pages: int, batch_size: int) -> None:
    """Index the generated corpus and print rates and time shares."""
    files = make_corpus(folder, pages)
    totals: dict[str, float] = defaultdict(float)
    module = model[0]
    vindex.ingest_file = timed(vindex.ingest_file, "parse", totals)  # index_paths looks it up at call time
    module.render_batch = timed(module.render_batch, "render", totals)
    model.encode = timed(model.encode, "encode", totals)
    client = vindex.open_client(index_dir)
    client.upsert = timed(client.upsert, "upsert", totals)
    identity = vindex.model_identity(model)
    vindex.ensure_collection(client, "bench", identity)
    report = vindex.index_paths(client, "bench", model, files, batch_size=batch_size, progress=False)
    client.close()
    seconds = report.seconds
    shares = {"parse": totals["parse"], "render": totals["render"], "encode": totals["encode"] - totals["render"],
              "upsert": totals["upsert"]}
    shares["other"] = seconds - sum(shares.values())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"indexed {len(files)} PDFs, {pages} pages, {report.snippets} snippets in {seconds:.2f} s: "
          f"{pages / seconds:.1f} pages/s, {report.snippets / seconds:.1f} snippets/s, peak RSS {peak_mb:.0f} MB")
    print("time shares: " + ", ".join(f"{k} {v / seconds:.0%} ({v:.2f} s)" for k, v in shares.items()))
    if report.skipped:
        print(f"skipped: {report.skipped[:3]}")


def bench_latency(model: Any, index_dir: Path, points: int, queries: int) -> None:
    """Top a collection up to ``points`` random vectors and time text queries."""
    client = vindex.open_client(index_dir)
    identity = vindex.model_identity(model)
    vindex.ensure_collection(client, "latency", identity)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for lo in range(client.count("latency", exact=True).count, points, 2048):
        n = min(2048, points - lo)
        vectors = rng.standard_normal((n, identity.dim)).astype(np.float32)
        batch = [vindex.models.PointStruct(id=lo + i, vector=v.tolist(), payload={"metadata": {"source": f"doc{i}"}})
                 for i, v in enumerate(vectors)]
        client.upsert("latency", points=batch, wait=True)
    print(f"collection of {points} points ready in {time.perf_counter() - start:.1f} s")
    texts = [sentence(10_000 + q, 8) for q in range(queries)]
    vindex.search(client, "latency", model, texts[0], limit=10)  # warm-up
    full, search_only = [], []
    for text in texts:
        t0 = time.perf_counter()
        vector = vindex.encode_query(model, text)
        t1 = time.perf_counter()
        client.query_points("latency", query=vector, limit=10)
        t2 = time.perf_counter()
        full.append(t2 - t0)
        search_only.append(t2 - t1)
    client.close()
    for label, values in (("encode + search", full), ("search only", search_only)):
        ms = np.array(values) * 1000
        print(f"{label:15s} over {points} points: p50 {np.percentile(ms, 50):.1f} ms, "
              f"p99 {np.percentile(ms, 99):.1f} ms ({queries} queries)")


def main() -> None:
    """Parse arguments and run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="VC2L model folder or shipped name")
    parser.add_argument("--preset", help="use a fresh random-weight preset instead of --model (e.g. micro)")
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--index", type=Path, help="embedded Qdrant folder (default: a temporary one)")
    args = parser.parse_args()

    model = (vc2l_retriever.create(args.preset, seed=0, device="cpu") if args.preset
             else vc2l_retriever.load(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = args.index or Path(tmp) / "index"
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        bench_indexing(model, corpus, index_dir, args.pages, args.batch_size)
        bench_latency(model, index_dir, args.points, args.queries)


if __name__ == "__main__":
    main()
