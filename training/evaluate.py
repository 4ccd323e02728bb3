"""Held-out retrieval checks, run periodically during training and for the model card.

Tasks, built deterministically from a held-out interleaved JSONL (documents the model never trained on):

- ``title->section``: query = a section heading, document = the section's first snippet without the heading.
- ``next-snippet``: query = a text snippet, document = the snippet that follows it.
- ``image->caption``: query = an image, document = the text of its snippet. MiniLM and BM25 read text alone;
  the baseline here is OCR+MiniLM: Tesseract reads the query image, MiniLM ranks with that text.
- ``word->definition`` (with WordNet): query = a synset's words, document = its definition, over the synsets
  that ``build_lexicon`` holds out (every 40th by commonness): everyday vocabulary outside the software manuals.

Every task scores Recall@1 and MRR@10 with all of the task's documents as the corpus; ties count against the
answer, so a model that scores everything alike (or a BM25 query sharing no word with any document) earns nothing.

Each held-out set is scored separately: held-out *files* of the training manuals (in-domain, ``data/docs``, built
by ``training/recipes/default.sh`` steps 1-2) and whole *sources* never trained on (out-of-domain, ``data/ood``:
the Debian packages ``octave-doc``, ``git-doc`` and ``debian-reference-en``, every file held out)::

    python -m vc2l_retriever.training.build_dataset /usr/share/doc/octave/octave.html /usr/share/doc/git-doc \
        /usr/share/doc/debian-reference-en/docs --out data/ood --max-chars 480 --heldout-fraction 1.0 \
        --max-files-per-root 1200 --max-pages 12

The VC2L model is scored next to all-MiniLM-L6-v2 and BM25 (``bm25s``, the ``bench`` extra; left out with a
warning when it is not installed) on the text-only tasks. Both sets are the defaults::

    python -m vc2l_retriever.training.evaluate --model vc2l_retriever/models/vc2l-default \
        --heldout in-domain=data/docs/heldout.jsonl --heldout out-of-domain=data/ood/heldout.jsonl

The model card's table is the in-domain set (``--heldout data/docs/heldout.jsonl --wordnet /usr/share/wordnet``;
a bare path is labelled by its folder's name, here ``docs``). ``--json`` writes
``{set: {"vc2l": ..., "all-MiniLM-L6-v2": ..., "bm25": ..., "ocr+all-MiniLM-L6-v2": ...}}`` (the last where
a set has image queries), each ``{task: {"recall@1", "mrr@10", "n"}}``; ``--wordnet`` adds a set of its own,
``wordnet``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import random
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vc2l_retriever.evaluation import bm25_scorer, normalize
from vc2l_retriever.inputs import Snippet
from vc2l_retriever.model import VC2LConfig
from vc2l_retriever.render import Renderer
from vc2l_retriever.training.data import Collator, InterleavedDocuments

logger = logging.getLogger(__name__)

EncodeFn = Callable[[Sequence[Snippet]], np.ndarray]
MIN_CHARS = 40
DEFAULT_HELDOUT = {"in-domain": "data/docs/heldout.jsonl", "out-of-domain": "data/ood/heldout.jsonl"}
MINILM = "all-MiniLM-L6-v2"
OCR_MINILM = "ocr+all-MiniLM-L6-v2"


@dataclass
class RetrievalTask:
    """Queries and their documents: query ``k`` should retrieve document ``k``."""

    name: str
    queries: list[Snippet]
    documents: list[Snippet]

    @property
    def text_only(self) -> bool:
        """Whether a text model can be scored on it."""
        return not any(s.images for s in self.queries + self.documents)


def _strip_heading(text: str, heading: str) -> str:
    first, _, rest = text.partition("\n")
    return rest.strip() if heading and first.rstrip("¶").strip() == heading else text.strip()


def build_tasks(documents: InterleavedDocuments, per_task: int = 500, max_chars: int = 480,
                seed: int = 0) -> list[RetrievalTask]:
    """The held-out tasks (see the module docstring), each capped at ``per_task`` pairs drawn with ``seed``."""
    titles: list[tuple[str, str]] = []
    nexts: list[tuple[str, str]] = []
    captions: list[tuple[str, str]] = []
    for d in range(len(documents)):
        doc = documents[d]
        headings = doc.meta.get("headings") or [""] * len(doc.texts)
        for i, text in enumerate(doc.texts):
            heading = headings[i] if i < len(headings) else ""
            previous = headings[i - 1] if 0 < i <= len(headings) else None
            body = _strip_heading(text, heading)[:max_chars]
            if heading and heading != previous and len(body) >= MIN_CHARS and len(heading) >= 3:
                titles.append((heading, body))
            following = doc.texts[i + 1].strip()[:max_chars] if i + 1 < len(doc.texts) else ""
            if len(text.strip()) >= MIN_CHARS and len(following) >= MIN_CHARS:
                nexts.append((text.strip()[:max_chars], following))
            if doc.images[i] and len(text.strip()) >= 10:
                captions.append((doc.images[i][0], text.strip()[:max_chars]))
    rng = random.Random(seed)
    tasks = []
    for name, pairs in (("title->section", titles), ("next-snippet", nexts)):
        pairs = _dedupe(pairs)
        picked = rng.sample(pairs, min(per_task, len(pairs)))
        if picked:  # a set without headings (or single-snippet documents) has no such task
            tasks.append(RetrievalTask(name, [Snippet(text=q) for q, _ in picked],
                                       [Snippet(text=t) for _, t in picked]))
    images = []
    for name, text in _dedupe(captions):
        image = documents.load_image(name)
        if image is not None:
            images.append((image, text))
    if len(images) >= 10:
        picked_images = rng.sample(images, min(per_task, len(images)))
        tasks.append(RetrievalTask("image->caption", [Snippet(images=[im]) for im, _ in picked_images],
                                   [Snippet(text=t) for _, t in picked_images]))
    return tasks


def wordnet_task(wordnet: str | Any, per_task: int = 500) -> RetrievalTask:
    """The ``word->definition`` task on the most common held-out WordNet synsets (see ``build_lexicon``)."""
    from vc2l_retriever.training.build_lexicon import heldout_synsets

    pairs = _dedupe([(", ".join(s.words), s.definition) for s in heldout_synsets(wordnet)])[:per_task]
    return RetrievalTask("word->definition", [Snippet(text=q) for q, _ in pairs], [Snippet(text=d) for _, d in pairs])


def _dedupe(pairs: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
    # Repeated queries or documents (boilerplate headings such as "Parameters") make Recall@1 ill-defined.
    seen_q: set[Any] = set()
    seen_d: set[str] = set()
    out = []
    for q, d in pairs:
        if q not in seen_q and d not in seen_d:
            seen_q.add(q)
            seen_d.add(d)
            out.append((q, d))
    return out


def reciprocal_ranks(sims: np.ndarray) -> np.ndarray:
    """Per query of an ``(n, n)`` score matrix whose answer to query ``k`` is document ``k``: 1 / the answer's rank
    within the top 10, else 0."""
    sims = np.nan_to_num(np.asarray(sims, dtype=np.float64), nan=-np.inf)
    correct = sims[np.arange(len(sims)), np.arange(len(sims))]
    # Ties count against the answer: BM25 gives most documents 0, and a collapsed model scores all alike.
    rank = (sims >= correct[:, None]).sum(axis=1)  # 1 = ranked first
    return np.where(rank <= 10, 1.0 / rank, 0.0)


def rank_scores(sims: np.ndarray) -> dict[str, float]:
    """Recall@1 and MRR@10 of an ``(n, n)`` score matrix whose answer to query ``k`` is document ``k``."""
    rr = reciprocal_ranks(sims)
    return {"recall@1": float((rr == 1).mean()), "mrr@10": float(rr.mean())}


def score(queries: np.ndarray, documents: np.ndarray) -> dict[str, float]:
    """:func:`rank_scores` of the cosine similarity of ``(n, d)`` query and document embeddings."""
    return rank_scores(normalize(queries) @ normalize(documents).T)


def evaluate(encode: EncodeFn, tasks: Sequence[RetrievalTask], text_only: bool = False) -> dict[str, Any]:
    """``{task: {"recall@1", "mrr@10", "n"}}`` for an encoder (``text_only`` skips tasks with images)."""
    results: dict[str, Any] = {}
    for task in tasks:
        if text_only and not task.text_only:
            continue
        q, d = encode(task.queries), encode(task.documents)
        results[task.name] = {**score(q, d), "n": len(task.queries)}
    return results


def bm25_results(tasks: Sequence[RetrievalTask]) -> dict[str, Any]:
    """BM25 (:func:`vc2l_retriever.evaluation.bm25_scorer`) on the text-only tasks, shaped like :func:`evaluate`."""
    scorer = bm25_scorer()
    return {task.name: {**rank_scores(scorer(task.queries, task.documents)), "n": len(task.queries)}
            for task in tasks if task.text_only}


def ocr_results(embed: EncodeFn, tasks: Sequence[RetrievalTask]) -> dict[str, Any]:
    """OCR+MiniLM (:mod:`vc2l_retriever.baselines`) on the tasks whose queries are images: Tesseract's text of
    each query image, embedded by ``embed`` (MiniLM), against the text documents."""
    from vc2l_retriever.baselines import ocr_image

    results = {}
    for task in tasks:
        if task.queries and all(q.images and not q.text for q in task.queries) and \
                not any(d.images for d in task.documents):
            read = [Snippet(text="\n".join(ocr_image(im) for im in q.images)) for q in task.queries]
            results[task.name] = {**score(embed(read), embed(task.documents)), "n": len(task.queries)}
    return results


def _sorted_encoder(model: torch.nn.Module, dim: int, embed: Callable[[list[Snippet]], torch.Tensor],
                    batch_size: int) -> EncodeFn:
    """Encode in eval mode and without gradients, shortest snippets first (batches of similar length pad less),
    returning rows in the caller's order. ``embed`` turns one batch of snippets into embeddings."""

    @torch.no_grad()
    def encode(snippets: Sequence[Snippet]) -> np.ndarray:
        was_training = model.training
        model.eval()
        order = sorted(range(len(snippets)), key=lambda k: len(snippets[k].text) + 10_000 * len(snippets[k].images))
        out = np.zeros((len(snippets), dim), np.float32)
        try:
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                out[chunk] = embed([snippets[k] for k in chunk]).float().cpu().numpy()
        finally:
            model.train(was_training)
        return out

    return encode


def vc2l_encoder(model: torch.nn.Module, config: VC2LConfig, batch_size: int = 64) -> EncodeFn:
    """Encode snippets with a (training) network exactly as :class:`VC2LModule` would, shortest first."""
    renderer, collator = Renderer(config.render), Collator(config)

    def embed(snippets: list[Snippet]) -> torch.Tensor:
        device = next(model.parameters()).device
        batch = collator.pixels([renderer.render(s) for s in snippets])
        return model(collator.normalize(batch["pixel_values"].to(device)), batch["patch_rows"].to(device))

    return _sorted_encoder(model, config.embed_dim, embed, batch_size)


def text_encoder(embed_texts: Callable[[Sequence[str]], np.ndarray]) -> EncodeFn:
    """Adapt a text embedder (the teacher) to snippets, giving it the same lower-cased text VC2L renders."""
    return lambda snippets: np.asarray(embed_texts([s.text.lower() for s in snippets]), dtype=np.float32)


def module_encoder(module: torch.nn.Module, batch_size: int = 64) -> EncodeFn:
    """Encode snippets through a loaded model's own ``preprocess`` and ``forward`` (any network class behind it)."""

    def embed(snippets: list[Snippet]) -> torch.Tensor:
        device = next(module.parameters()).device
        features = module.preprocess(snippets)
        features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        return module.forward(features)["sentence_embedding"]

    return _sorted_encoder(module, module.get_embedding_dimension(), embed, batch_size)


# ------------------------------------------------------------------------------------------ several sets


def parse_heldout(specs: Sequence[str]) -> dict[str, str]:
    """``label=path`` or a bare path (labelled by its folder's name) -> ``{label: path}``, in order.

    Raises:
        ValueError: on an empty label or path, or a label given twice (results would overwrite each other).
    """
    sets: dict[str, str] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or "/" in label or os.sep in label:  # "=" inside a path is part of the path
            label, path = os.path.basename(os.path.dirname(os.path.abspath(spec))), spec
        label, path = label.strip(), path.strip()
        if not label or not path:
            raise ValueError(f"--heldout {spec!r}: expected LABEL=PATH or PATH")
        if label in sets:
            raise ValueError(f"--heldout: the label {label!r} is used twice; name the sets with LABEL=PATH")
        sets[label] = path
    return sets


def build_task_sets(paths: dict[str, str], per_task: int = 500, max_chars: int = 480,
                    seed: int = 0) -> dict[str, list[RetrievalTask]]:
    """:func:`build_tasks` of each held-out JSONL (images from the ``images`` folder beside it), by label."""
    return {label: build_tasks(InterleavedDocuments(path), per_task, max_chars, seed) for label, path in paths.items()}


def prefix_tasks(tasks: Sequence[RetrievalTask], label: str) -> list[RetrievalTask]:
    """The tasks renamed ``label/name`` (``ood/title->section``), so results of several sets can share a dict."""
    return [RetrievalTask(f"{label}/{t.name}", t.queries, t.documents) for t in tasks]


def merge_task_sets(task_sets: dict[str, list[RetrievalTask]]) -> list[RetrievalTask]:
    """One task list for :func:`evaluate` (e.g. the trainer's periodic eval), every name prefixed by its set."""
    return [task for label, tasks in task_sets.items() for task in prefix_tasks(tasks, label)]


def _cell(metrics: dict[str, Any] | None) -> str:
    return f"{metrics['recall@1']:.3f} / {metrics['mrr@10']:.3f}" if metrics else "n/a"


def format_table(task_sets: dict[str, list[RetrievalTask]], results: dict[str, dict[str, Any]]) -> str:
    """Markdown, one row per (set, task): VC2L, MiniLM (OCR+MiniLM on image queries) and BM25 as R@1 / MRR@10,
    and VC2L's R@1 over MiniLM's."""
    lines = ["| set | task | n | VC2L R@1 / MRR@10 | all-MiniLM-L6-v2 R@1 / MRR@10 | BM25 R@1 / MRR@10 "
             "| VC2L / MiniLM R@1 |", "|---|---|---|---|---|---|---|"]
    for label, tasks in task_sets.items():
        systems = results[label]
        for task in tasks:
            ours = systems["vc2l"][task.name]
            minilm = systems.get(MINILM, {}).get(task.name)
            via_ocr = minilm is None and task.name in systems.get(OCR_MINILM, {})
            minilm = systems[OCR_MINILM][task.name] if via_ocr else minilm
            bm25 = systems.get("bm25", {}).get(task.name)
            ratio = f"{ours['recall@1'] / minilm['recall@1']:.2f}" if minilm and minilm["recall@1"] > 0 else "n/a"
            shown = f"{_cell(minilm)} (OCR)" if via_ocr else _cell(minilm)
            lines.append(f"| {label} | {task.name} | {ours['n']} | {_cell(ours)} | {shown} | {_cell(bm25)} "
                         f"| {ratio} |")
    return "\n".join(lines) + "\n"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Held-out retrieval of a VC2L model folder next to MiniLM and BM25.")
    parser.add_argument("--model", default="vc2l_retriever/models/vc2l-default", help="VC2L model folder")
    parser.add_argument("--heldout", action="append", metavar="[LABEL=]PATH",
                        help="held-out interleaved JSONL, repeatable; a bare path is labelled by its folder "
                             "(default: " + " ".join(f"{k}={v}" for k, v in DEFAULT_HELDOUT.items()) + ")")
    parser.add_argument("--queries", type=int, default=500, help="pairs per task (the recipes use 500)")
    parser.add_argument("--wordnet", help="WordNet folder (e.g. /usr/share/wordnet): adds the set 'wordnet'")
    parser.add_argument("--no-baseline", action="store_true", help="skip all-MiniLM-L6-v2 and BM25")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    try:
        args.heldout = parse_heldout(args.heldout) if args.heldout else dict(DEFAULT_HELDOUT)
    except ValueError as e:
        parser.error(str(e))
    if args.wordnet and "wordnet" in args.heldout:
        parser.error("--heldout: the label 'wordnet' is taken by --wordnet")
    missing = [path for path in args.heldout.values() if not os.path.isfile(path)]
    if missing:
        parser.error(f"--heldout: no such file: {', '.join(missing)} (build it with training/build_dataset.py)")
    # Decided before the model runs for minutes. Without bm25s (the bench extra; the train extra alone reproduces
    # the model card) BM25 is left out, said once, rather than failing after the other systems have run.
    args.bm25 = not args.no_baseline and importlib.util.find_spec("bm25s") is not None
    if not args.no_baseline and not args.bm25:
        logger.warning("BM25 skipped: bm25s is not installed (pip install 'vc2l-retriever[bench]')")
    args.ocr = not args.no_baseline and importlib.util.find_spec("pytesseract") is not None and \
        shutil.which("tesseract") is not None
    if not args.no_baseline and not args.ocr:
        logger.warning("OCR+MiniLM skipped: needs pytesseract (the bench extra) and Debian's tesseract-ocr")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Score a saved model, all-MiniLM-L6-v2 and BM25 on each held-out set (see the module docstring)."""
    from vc2l_retriever.st_module import VC2LModule

    args = _parse_args(argv)
    module = VC2LModule.load(args.model)
    task_sets = build_task_sets(args.heldout, args.queries, module.config.render.max_chars)
    if args.wordnet:
        task_sets["wordnet"] = [wordnet_task(args.wordnet, args.queries)]
    minilm = None
    if not args.no_baseline:
        from vc2l_retriever.training.teacher import minilm_embedder

        minilm = text_encoder(minilm_embedder()[0])
    vc2l = module_encoder(module)
    results: dict[str, dict[str, Any]] = {}
    for label, tasks in task_sets.items():
        logger.info("scoring %s: %s", label, ", ".join(f"{t.name} ({len(t.queries)})" for t in tasks))
        results[label] = {"vc2l": evaluate(vc2l, tasks)}
        if minilm is not None:
            results[label][MINILM] = evaluate(minilm, tasks, text_only=True)
        if args.bm25:
            results[label]["bm25"] = bm25_results(tasks)
        read = ocr_results(minilm, tasks) if args.ocr and minilm is not None else {}
        if read:
            results[label][OCR_MINILM] = read
    sys.stdout.write(format_table(task_sets, results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
