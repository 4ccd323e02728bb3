"""The page stem's decision rule (lab notebook, probe s12): two models on the same CSR queries, paired.

Page-from-title retrieval from pixels on three sets: ``ood`` (octave, GnuCash), ``ood2`` (six more manuals never
trained on) and ``in-domain`` (24 held-out texlive PDFs of the training manuals), as ``training/recipes/reader.sh``
builds them. Prints each model's Recall@1 / nDCG@10 per set, the pooled figures, and the paired difference of
per-query nDCG@10 with its 95% bootstrap interval over queries.

    python -m vc2l_retriever.training.csr_compare BASE_MODEL NEW_MODEL
    python -m vc2l_retriever.training.csr_compare MODEL --save base.npz   # score once, pair later

A saved file stands in for a model, which is how two models that need different code (a page stem trained on
another line cut) are paired: each is scored by its own checkout, then both files are compared.
"""

from __future__ import annotations

import argparse
import glob
import random
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from vc2l_retriever import evaluation as ev


def csr_sets(data: str = "data") -> dict[str, tuple[list[ev.CSRPair], int, int]]:
    """Name -> (page pairs, max queries, max pages), fixed before any model was scored on them."""
    held = ev.pdf_sources(ev.open_documents(f"{data}/docs/heldout.jsonl", None))
    random.Random(0).shuffle(held)
    return {
        "ood": (ev.csr_pairs(sorted(glob.glob(f"{data}/ood_pdfs_src/*.pdf")), max_pages=40), 200, 40),
        "ood2": (ev.csr_pairs(sorted(glob.glob(f"{data}/ood2_pdfs_src/*.pdf")), max_pages=40), 300, 40),
        "in-domain": (ev.csr_pairs(held[:24], max_pages=8), 500, 8),
    }


def per_query(model_path: str, sets: dict[str, tuple[list[ev.CSRPair], int, int]], points: bool = True,
              page_rows: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Set name -> per-query Recall@1 and nDCG@10 of one model (pages read from pixels, as the index reads them).
    ``points``: pages scored by their best point (``encode_points``), as the index scores them; else by their one
    (mean) vector. ``page_rows``: rows a page canvas (0: the model's own)."""
    from dataclasses import replace

    import vc2l_retriever
    from vc2l_retriever.render import Renderer

    model = vc2l_retriever.load(model_path)
    if page_rows:
        model[0].renderer = Renderer(replace(model[0].renderer.config, page_rows=page_rows))
    encode = ev.model_encoder(model, 32)
    scorer = ev.points_scorer(encode, ev.model_points(model, 32)) if points else ev.dense_scorer(encode)
    out = {}
    for name, (pairs, max_queries, max_pages) in sets.items():
        with tempfile.TemporaryDirectory() as tiles:
            rset = ev.csr_set(pairs, max_queries=max_queries, seed=0, max_pages=max_pages, tile_dir=tiles,
                              **ev.page_options(model))
            scores, _ = ev.set_scores(rset, scorer)
        out[name] = ev.query_metrics(scores, rset.relevant, ks=(1,))
    return out


def save_scores(path: str, result: dict[str, dict[str, np.ndarray]]) -> None:
    np.savez(path, **{f"{name}/{metric}": v for name, m in result.items() for metric, v in m.items()})


def load_scores(path: str) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as saved:
        for key in saved.files:
            name, metric = key.split("/", 1)
            out.setdefault(name, {})[metric] = saved[key]
    return out


def scores_of(paths: Sequence[str], data: str, **options: Any) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Path -> a saved ``.npz`` of per-query scores, or the model there scored now (the sets are built once)."""
    sets = csr_sets(data) if any(not p.endswith(".npz") for p in paths) else {}
    return {p: load_scores(p) if p.endswith(".npz") else per_query(p, sets, **options) for p in paths}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="model folder or name, or a .npz saved by --save")
    parser.add_argument("new", nargs="?", help="the same; leave out with --save")
    parser.add_argument("--save", help="score BASE alone and save its per-query scores here (.npz)")
    parser.add_argument("--data", default="data", help="the folder reader.sh built")
    parser.add_argument("--one-vector", action="store_true",
                        help="score a page by its one (mean) vector, not by its best point as the index does")
    parser.add_argument("--page-rows", type=int, default=0, help="rows a page canvas (default: the model's)")
    args = parser.parse_args(argv)
    options = {"points": not args.one_vector, "page_rows": args.page_rows}
    if args.save:
        save_scores(args.save, scores_of([args.base], args.data, **options)[args.base])
        return 0
    if args.new is None:
        parser.error("give NEW, or --save")
    runs = scores_of([args.base, args.new], args.data, **options)
    lines, pooled_ndcg = [], []
    for path, result in runs.items():
        for name, m in result.items():
            n = m["ndcg@10"].size
            lines.append(f"{path}  {name}: R@1 {m['recall@1'].mean():.3f} / nDCG@10 {m['ndcg@10'].mean():.3f} "
                         f"({round(m['recall@1'].mean() * n)} of {n} at rank 1)")
        ndcg = np.concatenate([m["ndcg@10"] for m in result.values()])
        hits = sum(float(m["recall@1"].sum()) for m in result.values())
        lines.append(f"{path}  pooled: {hits:.1f} of {ndcg.size} at rank 1, nDCG@10 {ndcg.mean():.3f}")
        pooled_ndcg.append(ndcg)
    mean, low, high = ev.paired_bootstrap(*pooled_ndcg)
    lines.append(f"nDCG@10 new - base: {mean:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}] (10,000 resamples)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
