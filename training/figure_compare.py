"""Image -> caption with and without reading a figure's labels: one model, the same queries (issue 17).

``training/evaluate.py``'s image -> caption task (a snippet's image finds the snippet's text) on each held-out
set, scored with ``figure_labels`` switched off (a figure is one tile) and on (``strips.figure_lines``: an image
that is not read as a document is read from its labels). Prints Recall@1 and MRR@10 with hits per set and
variant, and the pooled MRR@10 difference against the first variant with its paired 95% interval. Decide on the
training manuals' figures (``--heldout train=data/docs/train.jsonl``: the finder learns nothing, so they are a
fair set for choosing between finders, though not against tiles, which trained on them), confirm on the held-out
ones::

    python -m vc2l_retriever.training.figure_compare vc2l_retriever/models/vc2l-default \\
        --heldout in-domain=data/docs/heldout.jsonl --heldout ood=data/ood/heldout.jsonl \\
        --heldout gnucash=data/ood_gnucash/heldout.jsonl [--ocr]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from vc2l_retriever import evaluation as ev
from vc2l_retriever.render import Renderer
from vc2l_retriever.training.data import InterleavedDocuments
from vc2l_retriever.training.evaluate import build_tasks, module_encoder, parse_heldout, reciprocal_ranks

VARIANTS = {"tiles": False, "labels": True}  # name -> figure_labels


def compare(module: Any, paths: dict[str, str], per_task: int = 500, ocr: bool = False
            ) -> dict[str, dict[str, np.ndarray]]:
    """``{variant: {set: per-query reciprocal ranks}}`` of image -> caption; with ``ocr`` also the variant
    ``ocr+minilm``: Tesseract's text of each query image (enlarged as the baseline enlarges small images)
    embedded by MiniLM against MiniLM's caption vectors."""
    saved = module.renderer
    out: dict[str, dict[str, np.ndarray]] = {v: {} for v in VARIANTS}
    minilm = None
    if ocr:
        from vc2l_retriever.training.teacher import minilm_embedder

        minilm, out["ocr+minilm"] = minilm_embedder()[0], {}
    for label, path in paths.items():
        tasks = [t for t in build_tasks(InterleavedDocuments(path), per_task) if t.name == "image->caption"]
        if not tasks:
            continue
        task = tasks[0]
        encode = module_encoder(module)
        docs = encode(task.documents)
        for variant, labels in VARIANTS.items():
            module.renderer = Renderer(dataclasses.replace(saved.config, figure_labels=labels))
            try:
                queries = encode(task.queries)
            finally:
                module.renderer = saved
            out[variant][label] = report(label, variant, ev.normalize(queries) @ ev.normalize(docs).T)
        if minilm is not None:
            from vc2l_retriever.baselines import ocr_image

            read = minilm(["\n".join(ocr_image(im) for im in q.images).lower() for q in task.queries])
            captions = minilm([d.text.lower() for d in task.documents])
            out["ocr+minilm"][label] = report(label, "ocr+minilm", ev.normalize(read) @ ev.normalize(captions).T)
    return out


def report(label: str, variant: str, scores: np.ndarray) -> np.ndarray:
    """Per-query reciprocal ranks of ``scores``, printed as Recall@1 / MRR@10 with hits."""
    rr = reciprocal_ranks(scores)
    sys.stdout.write(f"{label} {variant}: R@1 {np.mean(rr == 1):.3f} / MRR@10 {rr.mean():.3f} "
                     f"({int(np.sum(rr == 1))} of {rr.size})\n")
    sys.stdout.flush()
    return rr


def main(argv: Sequence[str] | None = None) -> int:
    import vc2l_retriever

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--heldout", action="append", required=True, help="label=path of a held-out JSONL")
    parser.add_argument("--per-task", type=int, default=500)
    parser.add_argument("--ocr", action="store_true", help="also Tesseract + MiniLM on the same queries")
    args = parser.parse_args(argv)
    module = vc2l_retriever.load(args.model)[0]
    results = compare(module, parse_heldout(args.heldout), args.per_task, args.ocr)
    base = next(iter(VARIANTS))
    pooled = {v: np.concatenate(list(sets.values())) for v, sets in results.items()}
    for variant, rr in pooled.items():
        mean, low, high = ev.paired_bootstrap(pooled[base], rr)
        sys.stdout.write(f"pooled {variant}: {int(np.sum(rr == 1))} of {rr.size} at rank 1, MRR@10 {rr.mean():.3f}; "
                         f"- {base}: {mean:+.4f} [{low:+.4f}, {high:+.4f}]\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
