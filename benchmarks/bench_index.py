"""Indexing throughput and peak memory: Qdrant Edge (the embedded engine) against qdrant-client's local mode.

    .venv/bin/python benchmarks/bench_index.py [--model NAME_OR_PATH] [--pages 1000]
    .venv/bin/python benchmarks/bench_index.py --preset micro --pages 20      # smoke run

Generates ``--pages`` PDF pages (10-page documents with fpdf2; every third page has a figure), then indexes them
once per engine, each in a fresh subprocess so that its peak RSS is its own: pages/s, snippets/s, peak RSS, and
the time shares of parsing (``ingest_file``), rendering, encoding (the network, rendering excluded) and upserting
(the store's writes), from timers wrapped around those calls; the rest (hashing, payloads, ID lookups) is
"other". The two runs share one corpus and one model, so their ratio is the engines' difference. Search latency
is ``bench_store.py``'s job.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from qdrant_client import QdrantClient

import vc2l_retriever
from vc2l_retriever import index as vindex
from vc2l_retriever.store import ServerStore, open_store

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


def bench_indexing(model: Any, files: list[Path], index_dir: Path, engine: str, batch_size: int) -> dict:
    """Index ``files`` into a fresh store of ``engine`` and return rates, peak RSS and time shares."""
    totals: dict[str, float] = defaultdict(float)
    module = model[0]
    vindex.ingest_file = timed(vindex.ingest_file, "parse", totals)  # index_paths looks it up at call time
    module.render_inputs = timed(module.render_inputs, "render", totals)  # what preprocess calls
    model.encode = timed(model.encode, "encode", totals)
    if engine == "edge":
        store = open_store(index_dir, name="bench")
    else:  # the embedded engine before Edge, through the same interface
        store = ServerStore(QdrantClient(path=str(index_dir)), "bench")
    store.upsert = timed(store.upsert, "upsert", totals)  # type: ignore[method-assign]
    vindex.ensure_collection(store, vindex.model_identity(model))
    if engine == "local":
        tune_like_the_old_release(store)
    report = vindex.index_paths(store, model, files, batch_size=batch_size, progress=False)
    points = store.count()
    store.close()
    seconds = report.seconds
    shares = {"parse": totals["parse"], "render": totals["render"], "encode": totals["encode"] - totals["render"],
              "upsert": totals["upsert"]}
    shares["other"] = seconds - sum(shares.values())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"engine": engine, "snippets": report.snippets, "points": points, "seconds": seconds,
            "peak_rss_mb": peak_mb, "shares": shares, "skipped": report.skipped[:3]}


def tune_like_the_old_release(store: ServerStore) -> None:
    """The previous release switched local mode's SQLite file to WAL + synchronous=NORMAL (through qdrant-client's
    private attributes), since its default fsyncs every point; the comparison keeps that."""
    connection = store.client._client.collections[store.name].storage.storage  # type: ignore[attr-defined]
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def run_engine(args: argparse.Namespace, corpus: Path, engine: str) -> dict:
    """One engine in a fresh subprocess (its own peak RSS)."""
    command = [sys.executable, __file__, "--engine", engine, "--corpus", str(corpus), "--batch-size",
               str(args.batch_size)] + (["--preset", args.preset] if args.preset else ["--model", args.model or ""])
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    """Make the corpus and index it with both engines (or, with --engine, run one engine here)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="VC2L model folder or shipped name (default: the shipped default)")
    parser.add_argument("--preset", help="use a fresh random-weight preset instead of --model (e.g. micro)")
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--engine", choices=["edge", "local"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:  # the subprocess: index and print one JSON line
        model = (vc2l_retriever.create(args.preset, seed=0, device="cpu") if args.preset
                 else vc2l_retriever.load(args.model or None, device="cpu"))
        with tempfile.TemporaryDirectory() as tmp:
            row = bench_indexing(model, sorted(args.corpus.glob("*.pdf")), Path(tmp) / "index", args.engine,
                                 args.batch_size)
        print(json.dumps(row))
        return
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        make_corpus(corpus, args.pages)
        rows = [run_engine(args, corpus, engine) for engine in ("local", "edge")]
    for r in rows:
        print(f"{r['engine']:5s}: {args.pages} pages, {r['snippets']} snippets ({r['points']} points) in "
              f"{r['seconds']:.1f} s: {args.pages / r['seconds']:.1f} pages/s, {r['snippets'] / r['seconds']:.1f} "
              f"snippets/s, peak RSS {r['peak_rss_mb']:.0f} MB; upsert {r['shares']['upsert']:.2f} s; shares "
              + ", ".join(f"{k} {v / r['seconds']:.0%}" for k, v in r["shares"].items()))
    local, edge = rows
    print(f"edge / local: indexing speed {local['seconds'] / edge['seconds']:.2f}x, upsert time "
          f"{edge['shares']['upsert'] / max(local['shares']['upsert'], 1e-9):.2f}x, peak RSS "
          f"{edge['peak_rss_mb'] / local['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
