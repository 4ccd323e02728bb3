"""Held-out retrieval checks, run periodically during training and for the model card.

Tasks, built deterministically from a held-out interleaved JSONL (documents the model never trained on):

- ``title->section``: query = a section heading, document = the section's first snippet without the heading.
- ``next-snippet``: query = a text snippet, document = the snippet that follows it.
- ``image->caption``: query = an image, document = the text of its snippet (VC2L only: the text teacher has no
  image input).
- ``word->definition`` (with WordNet): query = a synset's words, document = its definition, over the synsets
  that ``build_lexicon`` holds out (every 40th by commonness): everyday vocabulary outside the software manuals.

Every task scores Recall@1 and MRR@10 with all of the task's documents as the corpus.

The model card's table, reproduced from a saved model (after ``training/recipes/default.sh`` steps 1-2)::

    python -m vc2l_retriever.training.evaluate --model vc2l_retriever/models/vc2l-default \
        --heldout data/docs/heldout.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vc2l_retriever.inputs import Snippet
from vc2l_retriever.model import VC2LConfig, VisionTransformer
from vc2l_retriever.render import Renderer
from vc2l_retriever.training.data import Collator, InterleavedDocuments

logger = logging.getLogger(__name__)

EncodeFn = Callable[[Sequence[Snippet]], np.ndarray]
MIN_CHARS = 40


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
        tasks.append(RetrievalTask(name, [Snippet(text=q) for q, _ in picked], [Snippet(text=t) for _, t in picked]))
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


def score(queries: np.ndarray, documents: np.ndarray) -> dict[str, float]:
    """Recall@1 and MRR@10 for normalised ``(n, d)`` queries whose answer is the same-index document."""
    sims = queries @ documents.T
    correct = sims[np.arange(len(sims)), np.arange(len(sims))]
    rank = (sims > correct[:, None]).sum(axis=1)  # 0 = ranked first
    mrr = np.where(rank < 10, 1.0 / (rank + 1), 0.0)
    return {"recall@1": float((rank == 0).mean()), "mrr@10": float(mrr.mean())}


def evaluate(encode: EncodeFn, tasks: Sequence[RetrievalTask], text_only: bool = False) -> dict[str, Any]:
    """``{task: {"recall@1", "mrr@10", "n"}}`` for an encoder (``text_only`` skips tasks with images)."""
    results: dict[str, Any] = {}
    for task in tasks:
        if text_only and not task.text_only:
            continue
        q, d = encode(task.queries), encode(task.documents)
        results[task.name] = {**score(q, d), "n": len(task.queries)}
    return results


def vc2l_encoder(model: VisionTransformer, config: VC2LConfig, batch_size: int = 64) -> EncodeFn:
    """Encode snippets with a (training) model exactly as :class:`VC2LModule` would, shortest first."""
    renderer, collator = Renderer(config.render), Collator(config)

    @torch.no_grad()
    def encode(snippets: Sequence[Snippet]) -> np.ndarray:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        order = sorted(range(len(snippets)), key=lambda k: len(snippets[k].text) + 10_000 * len(snippets[k].images))
        out = np.zeros((len(snippets), config.embed_dim), np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = collator.pixels([renderer.render(snippets[k]) for k in chunk])
            emb = model(collator.normalize(batch["pixel_values"].to(device)), batch["patch_rows"].to(device))
            out[chunk] = emb.float().cpu().numpy()
        model.train(was_training)
        return out

    return encode


def text_encoder(embed_texts: Callable[[Sequence[str]], np.ndarray]) -> EncodeFn:
    """Adapt a text embedder (the teacher) to snippets, giving it the same lower-cased text VC2L renders."""
    return lambda snippets: np.asarray(embed_texts([s.text.lower() for s in snippets]), dtype=np.float32)


def main(argv: Sequence[str] | None = None) -> int:
    """Score a saved model and all-MiniLM-L6-v2 on the held-out tasks, as the trainer and the model card do."""
    from vc2l_retriever.st_module import VC2LModule
    from vc2l_retriever.training.teacher import minilm_embedder

    parser = argparse.ArgumentParser(description="Held-out retrieval of a VC2L model folder next to MiniLM.")
    parser.add_argument("--model", default="vc2l_retriever/models/vc2l-default", help="VC2L model folder")
    parser.add_argument("--heldout", default="data/docs/heldout.jsonl", help="held-out interleaved JSONL")
    parser.add_argument("--queries", type=int, default=500, help="pairs per task (the recipes use 500)")
    parser.add_argument("--wordnet", help="WordNet folder (e.g. /usr/share/wordnet): adds word->definition")
    parser.add_argument("--no-baseline", action="store_true", help="skip all-MiniLM-L6-v2")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    module = VC2LModule.load(args.model)
    tasks = build_tasks(InterleavedDocuments(args.heldout), args.queries, module.config.render.max_chars)
    if args.wordnet:
        tasks.append(wordnet_task(args.wordnet, args.queries))
    results = {"vc2l": evaluate(vc2l_encoder(module.model, module.config), tasks)}
    if not args.no_baseline:
        embed, _ = minilm_embedder()
        results["all-MiniLM-L6-v2"] = evaluate(text_encoder(embed), tasks, text_only=True)
    lines = ["| task | n | VC2L R@1 / MRR@10 | all-MiniLM-L6-v2 R@1 / MRR@10 |", "|---|---|---|---|"]
    for task in tasks:
        ours, theirs = results["vc2l"][task.name], results.get("all-MiniLM-L6-v2", {}).get(task.name)
        base = f"{theirs['recall@1']:.3f} / {theirs['mrr@10']:.3f}" if theirs else "n/a"
        lines.append(f"| {task.name} | {ours['n']} | {ours['recall@1']:.3f} / {ours['mrr@10']:.3f} | {base} |")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
