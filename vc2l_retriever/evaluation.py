"""Retrieval evaluation: ranking metrics, the VC2L paper's protocols (arXiv 2510.18703) and plain text retrieval.

Every protocol turns data into a :class:`RetrievalSet` (queries, a pool of targets, the relevant targets of each
query); :func:`evaluate_set` scores it with any ``Scorer`` (``queries, documents -> (n_q, n_d)`` scores), so a
VC2L model, a text model and BM25 are measured on exactly the same sets. Protocols:

``anycir``
    Consecutive snippets ``(i, i + 1)`` of a document; query and target each drawn as text-only, image-only or
    text+image (9 sets, ``anycir:text->image`` etc.), using only pairs where both snippets have the needed
    modalities. The pool is the targets of the sampled pairs.
``seqcir``
    The next snippet of a document given the current one, both with all their content (text and images). The
    pool of each query is the other snippets of *its own document* (up to ``MAX_DOC_SEGMENTS``), so topic
    alone does not solve it: this is the "sequential understanding" part.
``csr``
    Page retrieval: a PDF outline entry (``get_toc()``), or a page's first line when the PDF has no outline, ->
    the page. Pages are rendered and cut into tiles exactly as ingestion does for scanned pages (no text layer
    is used); a page's score is the best score of its tiles. The pool is every page read from the PDFs.
``text``
    A section heading -> the section's first snippet with the heading removed (``meta.headings`` from
    ``build_dataset``; without it, a short first line counts as the heading).

Conventions (departures from ad-hoc evaluation scripts, all deliberate):

- Ties are broken *against* the relevant targets: a model that scores everything alike earns nothing, and
  BM25's many zero scores do not count as hits.
- Identical queries are merged (their targets all count as relevant) and identical targets are stored once;
  queries with more than ``MAX_RELEVANT`` relevant targets (boilerplate such as "Parameters") are dropped.
- Recall@k is the fraction of a query's relevant targets in the top k (the hit rate when there is one).
- Sampling is a function of ``seed`` and the set's name only, so every system sees the same sets.
"""

from __future__ import annotations

import logging
import math
import random
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vc2l_retriever.inputs import Snippet

logger = logging.getLogger(__name__)

EncodeFn = Callable[[Sequence[Snippet]], np.ndarray]
"""Snippets -> ``(n, d)`` float embeddings (normalised by the scorer)."""
Scorer = Callable[[Sequence[Snippet], Sequence[Snippet]], np.ndarray]
"""Queries, documents -> ``(n_queries, n_documents)`` similarity scores."""
PointsFn = Callable[[Sequence[Snippet]], list[np.ndarray]]
"""Snippets -> each one's points in a dot-product index, ``(k, d)`` (``encode_points``): one for a text, several
for a page."""

PROTOCOLS = ("anycir", "seqcir", "csr", "text")
MODALITIES = ("text", "image", "text+image")
KS = (1, 5, 10)
MIN_TEXT_CHARS = 20  # shorter texts ("¶", "Note") carry too little to be a query or a target
MAX_RELEVANT = 3
MAX_IMAGES = 3  # images kept per snippet; the renderer draws as many as its layout holds
MAX_DOC_SEGMENTS = 64  # SeqCIR reads at most this many snippets of a document (bounds its pool)
MAX_HEADING_CHARS = 100


# ----------------------------------------------------------------------------------------------- metrics


def _dedupe(ranked: Sequence[Any]) -> list[Any]:
    seen: set[Any] = set()
    return [d for d in ranked if not (d in seen or seen.add(d))]


def recall_at_k(ranked: Sequence[Any], relevant: Collection[Any], k: int) -> float:
    """Fraction of ``relevant`` found in the first ``k`` of ``ranked`` (repeats count once)."""
    if not relevant:
        raise ValueError("recall is undefined without relevant documents")
    return len(set(_dedupe(ranked)[:k]) & set(relevant)) / len(set(relevant))


def mrr_at_k(ranked: Sequence[Any], relevant: Collection[Any], k: int) -> float:
    """Reciprocal rank of the first relevant item within the first ``k`` (0 if none)."""
    for position, doc in enumerate(_dedupe(ranked)[:k]):
        if doc in relevant:
            return 1.0 / (position + 1)
    return 0.0


def ndcg_at_k(ranked: Sequence[Any], relevant: Collection[Any], k: int) -> float:
    """Binary-gain nDCG@k: DCG of ``ranked`` over the DCG of an ideal ranking of ``relevant``."""
    if not relevant:
        raise ValueError("nDCG is undefined without relevant documents")
    dcg = sum(1.0 / math.log2(p + 2) for p, doc in enumerate(_dedupe(ranked)[:k]) if doc in relevant)
    ideal = sum(1.0 / math.log2(p + 2) for p in range(min(len(set(relevant)), k)))
    return dcg / ideal


def rank_targets(scores: np.ndarray, relevant: Collection[int], k: int) -> list[int]:
    """The ``k`` best target indices of one query by descending score, ties broken against ``relevant``."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    is_relevant = np.zeros(scores.shape[0], dtype=bool)
    is_relevant[list(relevant)] = True
    order = np.lexsort((is_relevant, -scores))  # last key is primary: score first, then non-relevant first
    return order[:k].tolist()


def query_metrics(scores: np.ndarray, relevant: Sequence[Collection[int]], ks: Sequence[int] = KS
                  ) -> dict[str, np.ndarray]:
    """Per query: Recall@k (each ``ks``), MRR@10 and nDCG@10 of a ``(n_queries, n_targets)`` score matrix."""
    if len(relevant) != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} score rows but {len(relevant)} relevance sets")
    depth = max(*ks, 10)
    out = {name: np.zeros(len(relevant)) for name in [f"recall@{k}" for k in ks] + ["mrr@10", "ndcg@10"]}
    for q, (row, rel) in enumerate(zip(scores, relevant, strict=True)):
        ranked = rank_targets(row, rel, depth)
        for k in ks:
            out[f"recall@{k}"][q] = recall_at_k(ranked, rel, k)
        out["mrr@10"][q] = mrr_at_k(ranked, rel, 10)
        out["ndcg@10"][q] = ndcg_at_k(ranked, rel, 10)
    return out


def score_rankings(scores: np.ndarray, relevant: Sequence[Collection[int]], ks: Sequence[int] = KS) -> dict[str, float]:
    """Mean Recall@k (each ``ks``), MRR@10 and nDCG@10 of a ``(n_queries, n_targets)`` score matrix."""
    per_query = query_metrics(scores, relevant, ks)
    n = max(len(relevant), 1)
    return {name: float(values.sum()) / n for name, values in per_query.items()}


def paired_bootstrap(base: np.ndarray, new: np.ndarray, resamples: int = 10_000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """Mean of ``new - base`` over the same queries and its 95% interval from resampling the queries."""
    diff = np.asarray(new, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, diff.size, size=(resamples, diff.size))
    means = diff[draws].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# ------------------------------------------------------------------------------------------ retrieval sets


@dataclass
class RetrievalSet:
    """Queries, a pool of targets, and which targets answer each query.

    Attributes:
        name: e.g. ``anycir:text->image``.
        queries: Query snippets.
        documents: What is embedded on the target side. Normally one per target; with ``groups``, several
            (the tiles of a page), a target scoring the maximum over its documents.
        relevant: For each query, the indices of its relevant targets.
        groups: ``groups[j]`` is the target of ``documents[j]``; ``None`` means document ``j`` is target ``j``.
        candidates: For each query, the targets it may retrieve (``None``: all of them).
        targets: A label per target (e.g. ``"file.pdf#3"``), for reports and for baselines that build their own
            documents for the same targets.
        stats: Counts of what was dropped while building (missing images, ambiguous queries).
    """

    name: str
    queries: list[Snippet]
    documents: list[Snippet]
    relevant: list[set[int]]
    groups: list[int] | None = None
    candidates: list[list[int]] | None = None
    targets: list[str] | None = None
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def n_targets(self) -> int:
        """Size of the target pool."""
        if self.targets is not None:
            return len(self.targets)
        return max(self.groups) + 1 if self.groups else len(self.documents)

    def all_text(self) -> bool:
        """Whether every query and document has text (text-only systems can be scored on it)."""
        return all(s.text.strip() for s in self.queries + self.documents)


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def dense_scorer(encode: EncodeFn) -> Scorer:
    """Cosine similarity of ``encode`` embeddings."""

    def score(queries: Sequence[Snippet], documents: Sequence[Snippet]) -> np.ndarray:
        return normalize(encode(queries)) @ normalize(encode(documents)).T

    return score


def points_scorer(encode: EncodeFn, points: PointsFn) -> Scorer:
    """Each document scored by its best point against the unit query, by dot product, as the index scores it: a
    text by its cosine, a page read line by line by its mean and its best window together."""

    def score(queries: Sequence[Snippet], documents: Sequence[Snippet]) -> np.ndarray:
        q = normalize(encode(queries))
        if not documents:
            return np.zeros((len(q), 0), np.float32)
        return np.stack([(p @ q.T).max(0) for p in points(documents)], axis=1)

    return score


class CachedEncoder:
    """Wraps an :data:`EncodeFn` (or, with ``stack=False``, a :data:`PointsFn`) so a snippet seen before (same
    ``metadata["eval_key"]``) is not encoded again.

    The protocols key every snippet by its content, so a snippet shared by several sets costs one encode.
    """

    def __init__(self, encode: EncodeFn | PointsFn, *, stack: bool = True) -> None:
        self.encode, self.stack = encode, stack
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, snippets: Sequence[Snippet]) -> Any:
        keys = [s.metadata.get("eval_key") for s in snippets]
        todo: dict[str, Snippet] = {}
        uncached = []
        for i, (key, snippet) in enumerate(zip(keys, snippets, strict=True)):
            if key is None:
                uncached.append(i)
            elif key not in self.cache:
                todo.setdefault(key, snippet)
        if todo:
            for key, row in zip(todo, self.encode(list(todo.values())), strict=True):
                self.cache[key] = np.asarray(row, np.float32)
        fresh = list(self.encode([snippets[i] for i in uncached])) if uncached else []
        rows = [self.cache[k] if k is not None else None for k in keys]
        for j, i in enumerate(uncached):
            rows[i] = np.asarray(fresh[j], np.float32)
        if not self.stack:
            return rows
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)


def model_encoder(model: Any, batch_size: int = 32) -> EncodeFn:
    """:data:`EncodeFn` of a VC2L ``SentenceTransformer`` (renders whatever the snippets hold)."""

    def encode(snippets: Sequence[Snippet]) -> np.ndarray:
        return model.encode(list(snippets), batch_size=batch_size, convert_to_numpy=True,
                            normalize_embeddings=True, show_progress_bar=False)

    return encode


def model_points(model: Any, batch_size: int = 32) -> PointsFn:
    """:data:`PointsFn` of a VC2L ``SentenceTransformer``: the points the index stores for each snippet."""

    def points(snippets: Sequence[Snippet]) -> list[np.ndarray]:
        return model.encode_points(list(snippets), batch_size=batch_size)

    return points


def text_encoder(model: Any, batch_size: int = 32) -> EncodeFn:
    """:data:`EncodeFn` of a text ``SentenceTransformer``: embeds each snippet's text, ignoring its images."""

    def encode(snippets: Sequence[Snippet]) -> np.ndarray:
        return model.encode([s.text for s in snippets], batch_size=batch_size, convert_to_numpy=True,
                            normalize_embeddings=True, show_progress_bar=False)

    return encode


def bm25_scorer() -> Scorer:
    """BM25 (``bm25s`` defaults: lower-cased, English stop words, no stemming) over the snippets' text.

    Needs the ``bench`` extra. The index is built per call on that call's documents, so document frequencies
    come from the pool being ranked, as a search over that pool alone would see them.
    """
    import bm25s

    def tokens(texts: Sequence[str]) -> list[list[str]]:
        return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)

    def score(queries: Sequence[Snippet], documents: Sequence[Snippet]) -> np.ndarray:
        index = bm25s.BM25()
        index.index(tokens([d.text for d in documents]), show_progress=False)
        zeros = np.zeros(len(documents))  # a query of stop words only matches nothing
        return np.stack([index.get_scores(q) if q else zeros for q in tokens([q.text for q in queries])]
                        ).astype(np.float32)

    return score


def _group_max(scores: np.ndarray, groups: Sequence[int], n_targets: int) -> np.ndarray:
    """``(n_q, n_docs)`` -> ``(n_q, n_targets)``: each target's best document score (``-inf`` if it has none)."""
    groups_arr = np.asarray(groups)
    order = np.argsort(groups_arr, kind="stable")
    sorted_groups = groups_arr[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    out = np.full((scores.shape[0], n_targets), -np.inf, dtype=np.float32)
    out[:, sorted_groups[starts]] = np.maximum.reduceat(scores[:, order], starts, axis=1)
    return out


def set_scores(rset: RetrievalSet, scorer: Scorer) -> tuple[np.ndarray, float]:
    """The ``(n_queries, n_targets)`` score matrix of a non-empty set (targets outside a query's candidates at
    -inf) and the mean pool size."""
    scores = np.asarray(scorer(rset.queries, rset.documents), dtype=np.float32)
    if rset.groups is not None:
        scores = _group_max(scores, rset.groups, rset.n_targets)
    pool = float(rset.n_targets)
    if rset.candidates is not None:
        allowed = np.zeros(scores.shape, dtype=bool)
        for q, targets in enumerate(rset.candidates):
            allowed[q, targets] = True
        scores = np.where(allowed, scores, -np.inf)
        pool = float(np.mean([len(c) for c in rset.candidates]))
    return scores, pool


def evaluate_set(rset: RetrievalSet, scorer: Scorer, ks: Sequence[int] = KS) -> dict[str, float]:
    """Score one set: the metrics of :func:`score_rankings` plus ``queries`` and ``targets`` (mean pool size)."""
    if not rset.queries:
        return {"queries": 0, "targets": rset.n_targets}
    scores, pool = set_scores(rset, scorer)
    return {**score_rankings(scores, rset.relevant, ks), "queries": len(rset.queries), "targets": pool}


def evaluate(sets: Iterable[RetrievalSet], scorer: Scorer, ks: Sequence[int] = KS) -> dict[str, dict[str, float]]:
    """:func:`evaluate_set` for each set, by name (empty sets are reported with 0 queries)."""
    return {rset.name: evaluate_set(rset, scorer, ks) for rset in sets}


# --------------------------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class Segment:
    """One non-empty segment of a document, as listed in the JSONL (images are names under the image root)."""

    doc: int
    index: int
    text: str
    images: tuple[str, ...]
    heading: str = ""

    def has(self, modality: str) -> bool:
        """Whether the segment can be drawn as ``modality`` (``text``, ``image``, ``text+image``, ``full``)."""
        text_ok = len(self.text.strip()) >= MIN_TEXT_CHARS
        if modality == "full":
            return bool(self.text.strip() or self.images)
        return (text_ok or "text" not in modality) and (bool(self.images) or "image" not in modality)


def open_documents(path: str | Path, image_root: str | Path | None = None) -> Any:
    """The training module's lazy JSONL reader (``InterleavedDocuments``) for ``path``."""
    from vc2l_retriever.training.data import InterleavedDocuments

    return InterleavedDocuments(path, image_root)


def read_segments(documents: Any, max_documents: int | None = None) -> list[list[Segment]]:
    """Non-empty segments of each document (texts only; images stay file names until a set needs them)."""
    out: list[list[Segment]] = []
    for d in range(len(documents) if max_documents is None else min(len(documents), max_documents)):
        doc = _document(documents, d)
        if doc is None:
            out.append([])
            continue
        headings = list(doc.meta.get("headings") or [])
        segments = []
        for i, text in enumerate(doc.texts):
            heading = str(headings[i]).rstrip("¶").strip() if i < len(headings) else _guess_heading(text)
            segment = Segment(d, i, text, tuple(doc.images[i][:MAX_IMAGES]), heading)
            if segment.has("full"):
                segments.append(segment)
        out.append(segments)
    return out


def segments_from_snippets(snippets: Iterable[Snippet]) -> list[list[Segment]]:
    """Segments from ingestion output (``vc2l_retriever.ingest``), one document per ``source``, headings from
    ``metadata["heading"]``. Text only: for the ``text`` protocol and text->text retrieval on any folder."""
    by_source: dict[str, list[Snippet]] = {}
    for snippet in snippets:
        by_source.setdefault(str(snippet.source), []).append(snippet)
    out = []
    for d, group in enumerate(by_source.values()):
        segments = [Segment(d, i, s.text, (), str(s.metadata.get("heading", "")).rstrip("¶").strip())
                    for i, s in enumerate(group)]
        out.append([s for s in segments if s.text.strip()])
    return out


def _document(documents: Any, d: int) -> Any:
    """Document ``d``, or ``None`` (logged) when its line is not a valid record: one bad line skips one document."""
    try:
        doc = documents[d]
        if not isinstance(doc.meta, dict):
            raise TypeError("'meta' is not an object")
        return doc
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        logger.warning("%s: document %d skipped (%s: %s)", getattr(documents, "path", "data"), d,
                       type(e).__name__, e)
        return None


def _guess_heading(text: str) -> str:
    # Without build_dataset's meta, a short first line that does not end a sentence is taken as a heading.
    first, _, rest = text.strip().partition("\n")
    first = first.strip()
    return first if rest.strip() and 3 <= len(first) <= 80 and not first.endswith((".", ":", ",", ";")) else ""


class ImageCheck:
    """Resolves image names to paths, decoding each once to drop missing or corrupt files.

    Args:
        documents: Anything with ``image_root`` and ``load_image(name) -> PIL.Image | None``.
    """

    def __init__(self, documents: Any) -> None:
        self.documents = documents
        self.ok: dict[str, bool] = {}

    def paths(self, names: Iterable[str]) -> list[Path]:
        """Paths of the names that decode, in order."""
        out = []
        for name in names:
            if name not in self.ok:
                self.ok[name] = self.documents.load_image(name) is not None
            if self.ok[name]:
                out.append(Path(self.documents.image_root) / name)
        return out


def segment_snippet(segment: Segment, modality: str, images: ImageCheck) -> Snippet | None:
    """The segment drawn as ``modality`` (``full``: all it has); ``None`` if a needed image does not decode."""
    text = segment.text.strip() if modality in ("text", "text+image", "full") else ""
    paths = images.paths(segment.images) if modality in ("image", "text+image", "full") else []
    if ("image" in modality and not paths) or not (text or paths):
        return None
    key = repr((text, tuple(p.name for p in paths)))
    return Snippet(text=text, images=list(paths), metadata={"eval_key": key})


class _SetBuilder:
    """Accumulates (query, target) pairs, merging identical queries and storing identical targets once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.queries: list[Snippet] = []
        self.relevant: list[set[int]] = []
        self.candidates: list[list[int]] = []
        self.documents: list[Snippet] = []
        self.labels: list[str] = []
        self.query_index: dict[str, int] = {}
        self.target_index: dict[str, int] = {}
        self.stats = {"pairs": 0, "images_missing": 0, "ambiguous": 0, "trivial": 0}

    def target(self, snippet: Snippet, label: str | None = None) -> int:
        key = snippet.metadata["eval_key"]
        if key not in self.target_index:
            self.target_index[key] = len(self.documents)
            self.documents.append(snippet)
            self.labels.append(label or key)
        return self.target_index[key]

    def add(self, query: Snippet, target: int, candidates: list[int] | None = None) -> None:
        """One pair; with ``candidates`` the query keeps its own pool and is never merged."""
        key = query.metadata["eval_key"]
        if key == self.documents[target].metadata["eval_key"]:
            self.stats["trivial"] += 1  # a repeated snippet: the answer would be the query itself
            return
        self.stats["pairs"] += 1
        if candidates is None and key in self.query_index:
            self.relevant[self.query_index[key]].add(target)
            return
        self.query_index.setdefault(key, len(self.queries))
        self.queries.append(query)
        self.relevant.append({target})
        self.candidates.append(candidates or [])

    def build(self, with_candidates: bool = False) -> RetrievalSet:
        keep = [q for q, rel in enumerate(self.relevant) if len(rel) <= MAX_RELEVANT]
        self.stats["ambiguous"] += len(self.relevant) - len(keep)
        return RetrievalSet(self.name, [self.queries[q] for q in keep], self.documents,
                            [self.relevant[q] for q in keep],
                            candidates=[self.candidates[q] for q in keep] if with_candidates else None,
                            targets=self.labels, stats=dict(self.stats))


def _shuffled(n: int, seed: int, name: str) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}:{name}").shuffle(order)  # str seeds hash with sha512: stable across processes
    return order


# --------------------------------------------------------------------------------------------- protocols


def anycir_sets(segments: Sequence[Sequence[Segment]], images: ImageCheck, *, max_queries: int = 500,
                seed: int = 0) -> list[RetrievalSet]:
    """AnyCIR: the 9 query/target modality combinations over consecutive snippet pairs."""
    sets = []
    for qm in MODALITIES:
        for tm in MODALITIES:
            name = f"anycir:{qm}->{tm}"
            pairs = [(a, b) for doc in segments for a, b in zip(doc[:-1], doc[1:], strict=True)
                     if a.has(qm) and b.has(tm)]
            builder = _SetBuilder(name)
            for k in _shuffled(len(pairs), seed, name):
                if builder.stats["pairs"] >= max_queries:
                    break
                query, target = segment_snippet(pairs[k][0], qm, images), segment_snippet(pairs[k][1], tm, images)
                if query is None or target is None:
                    builder.stats["images_missing"] += 1
                    continue
                builder.add(query, builder.target(target))
            sets.append(builder.build())
    return sets


def seqcir_set(segments: Sequence[Sequence[Segment]], images: ImageCheck, *, max_queries: int = 500,
               seed: int = 0) -> RetrievalSet:
    """SeqCIR: current snippet -> next snippet, among the other snippets of the same document."""
    builder = _SetBuilder("seqcir")
    eligible = [d for d, doc in enumerate(segments) if len(doc) >= 3]
    for d in _shuffled(len(eligible), seed, "seqcir"):
        if builder.stats["pairs"] >= max_queries:
            break
        doc = segments[eligible[d]][:MAX_DOC_SEGMENTS]
        snippets = [segment_snippet(s, "full", images) for s in doc]
        builder.stats["images_missing"] += sum(s is None for s in snippets)
        ids = [builder.target(s) if s is not None else None for s in snippets]
        pool = sorted({i for i in ids if i is not None})
        for i in range(len(doc) - 1):
            if ids[i] is None or ids[i + 1] is None or builder.stats["pairs"] >= max_queries:
                continue
            builder.add(snippets[i], ids[i + 1], candidates=[j for j in pool if j != ids[i]])
    return builder.build(with_candidates=True)


def _strip_heading(text: str, heading: str) -> str:
    body = text.strip()
    first, _, rest = body.partition("\n")
    if first.rstrip("¶").strip() == heading:
        return rest.strip()
    return body[len(heading):].strip() if body.startswith(heading) else body


def text_set(segments: Sequence[Sequence[Segment]], *, max_queries: int = 500, seed: int = 0) -> RetrievalSet:
    """Plain text retrieval: section heading -> the section's first snippet, heading removed."""
    sections: dict[str, list[tuple[str, str]]] = {}
    for doc in segments:
        previous = None
        for s in doc:
            body = _strip_heading(s.text, s.heading)
            if s.heading and s.heading != previous and 3 <= len(s.heading) <= MAX_HEADING_CHARS \
                    and len(body) >= MIN_TEXT_CHARS:
                sections.setdefault(" ".join(s.heading.casefold().split()), []).append((s.heading, body))
            previous = s.heading
    builder = _SetBuilder("text:heading->section")
    names = sorted(sections)
    for k in _shuffled(len(names), seed, builder.name):
        group = sections[names[k]]
        if len(builder.queries) >= max_queries:
            break
        if len(group) > MAX_RELEVANT:  # "Examples", "Parameters": no single right answer
            builder.stats["ambiguous"] += 1
            continue
        query = Snippet(text=group[0][0], metadata={"eval_key": repr((group[0][0], ()))})
        for _, body in group:
            builder.add(query, builder.target(Snippet(text=body, metadata={"eval_key": repr((body, ()))})))
    return builder.build()


# ------------------------------------------------------------------------------------------------------ CSR


@dataclass(frozen=True)
class CSRPair:
    """A page-retrieval query: ``query`` (an outline entry or a page's first line) should find ``page`` of ``pdf``.

    Attributes:
        query: The query text.
        pdf: Path of the PDF.
        page: 1-based page number.
        origin: ``"outline"`` or ``"title"``.
    """

    query: str
    pdf: str
    page: int
    origin: str


def _clean_title(text: str) -> str:
    title = " ".join(text.split())
    return title if 3 <= len(title) <= MAX_HEADING_CHARS and sum(c.isalpha() for c in title) >= 3 else ""


def _outline_pairs(doc: Any, path: str, limit: int) -> list[CSRPair]:
    pairs = []
    for bookmark in doc.get_toc():
        dest = bookmark.get_dest()
        index = dest.get_index() if dest is not None else None
        title = _clean_title(bookmark.get_title() or "")
        if title and index is not None and 0 <= index < limit:
            pairs.append(CSRPair(title, path, index + 1, "outline"))
    return pairs


def _title_pairs(doc: Any, path: str, limit: int) -> list[CSRPair]:
    pairs = []
    for index in range(limit):
        page = doc[index]
        try:
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_range()
            finally:
                textpage.close()
        finally:
            page.close()
        title = next((t for t in map(_clean_title, text.splitlines()) if t), "")
        if title:
            pairs.append(CSRPair(title, path, index + 1, "title"))
    return pairs


def csr_pairs(pdfs: Iterable[str | Path], max_pages: int | None = 12) -> list[CSRPair]:
    """CSR queries of a set of PDFs: outline entries (``get_toc()``), else each page's first text line.

    Only the first ``max_pages`` pages of each PDF are used. Unreadable PDFs are logged and skipped.
    """
    import pypdfium2 as pdfium

    pairs: list[CSRPair] = []
    for path in pdfs:
        try:
            doc = pdfium.PdfDocument(str(path))
        except (pdfium.PdfiumError, OSError) as e:
            logger.warning("%s: skipped for CSR (%s)", path, e)
            continue
        try:
            limit = len(doc) if max_pages is None else min(len(doc), max_pages)
            pairs.extend(_outline_pairs(doc, str(path), limit) or _title_pairs(doc, str(path), limit))
        except pdfium.PdfiumError as e:
            logger.warning("%s: skipped for CSR (%s)", path, e)
        finally:
            doc.close()
    return pairs


def render_page(pdf: str | Path, page: int, dpi: float = 150.0) -> Any:
    """Page ``page`` (1-based) of ``pdf`` as an RGB ``PIL.Image`` at ``dpi`` (what a scanner would produce)."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        bitmap = doc[page - 1].render(scale=dpi / 72)
        try:
            return bitmap.to_pil().convert("RGB")
        finally:
            bitmap.close()
    finally:
        doc.close()


def _page_tiles(pdfs: Sequence[str], max_pages: int | None, page_width_px: int,
                tile_dir: Path | None, page_tiles: bool = True) -> tuple[list[Snippet], list[str]]:
    """Every page of ``pdfs`` rendered (and tiled) as ingestion does for scans (the text layer is never read)."""
    from vc2l_retriever.ingest import IngestError, IngestOptions, iter_file

    options = IngestOptions(max_pages=max_pages, min_page_text_chars=sys.maxsize, page_width_px=page_width_px,
                            page_tiles=page_tiles)
    tiles: list[Snippet] = []
    labels: list[str] = []
    for n, pdf in enumerate(pdfs):
        try:
            for tile in iter_file(pdf, options):
                meta = tile.metadata
                label = f"{pdf}#{tile.page}"
                images = list(tile.images)
                if tile_dir is not None:  # a page is ~10 tiles of 150 kB: keep them on disk, not in memory
                    images = [tile_dir / f"{n}-{tile.page}-{meta.get('band')}-{meta.get('column')}.png"]
                    tile.images[0].save(images[0])
                key = repr((label, meta.get("band"), meta.get("column")))
                tiles.append(Snippet(images=images, source=pdf, page=tile.page, kind="page",
                                     metadata={"eval_key": key}))
                labels.append(label)
        except IngestError as e:
            logger.warning("%s", e)
    return tiles, labels


def csr_set(pairs: Sequence[CSRPair], *, max_queries: int = 500, seed: int = 0, max_pages: int | None = 12,
            page_width_px: int = 672, tile_dir: str | Path | None = None, page_tiles: bool = True) -> RetrievalSet:
    """CSR: query text -> page, each page embedded as its tiles (max-pooled); the pool is every page read.

    Args:
        pairs: From :func:`csr_pairs`.
        max_queries: Distinct query texts sampled (identical texts are merged; more than ``MAX_RELEVANT``
            pages for one text is dropped as ambiguous, e.g. a running header).
        seed: Sampling seed.
        max_pages: Pages read per PDF (the pool).
        page_width_px: Pages are rendered this wide before tiling (ingestion's default).
        page_tiles: Cut pages into tiles; ``False``: each page is one snippet of the whole page, as ingestion
            does for grid-layout models (``index.default_ingest_options``).
        tile_dir: Write tiles here as PNG instead of holding them in memory.
    """
    by_text: dict[str, list[CSRPair]] = {}
    for pair in pairs:
        by_text.setdefault(" ".join(pair.query.casefold().split()), []).append(pair)
    names = sorted(by_text)
    chosen, ambiguous = [], 0
    for k in _shuffled(len(names), seed, "csr"):
        if len(chosen) >= max_queries:
            break
        group = by_text[names[k]]
        if len({(p.pdf, p.page) for p in group}) > MAX_RELEVANT:
            ambiguous += 1
        else:
            chosen.append(group)
    pdfs = sorted({p.pdf for group in chosen for p in group})
    tiles, tile_labels = _page_tiles(pdfs, max_pages, page_width_px, Path(tile_dir) if tile_dir else None,
                                     page_tiles)
    labels = list(dict.fromkeys(tile_labels))
    index = {label: i for i, label in enumerate(labels)}
    queries, relevant = [], []
    for group in chosen:
        rel = {index[f"{p.pdf}#{p.page}"] for p in group if f"{p.pdf}#{p.page}" in index}
        if rel:  # a page that rendered blank has no tiles
            queries.append(Snippet(text=group[0].query, metadata={"eval_key": repr((group[0].query, ()))}))
            relevant.append(rel)
    stats = {"pairs": sum(len(g) for g in chosen), "ambiguous": ambiguous, "no_page": len(chosen) - len(queries),
             "pdfs": len(pdfs), "tiles": len(tiles)}
    return RetrievalSet("csr", queries, tiles, relevant, groups=[index[lab] for lab in tile_labels],
                        targets=labels, stats=stats)


def pdf_sources(documents: Any) -> list[str]:
    """PDFs named by the documents' ``meta.source`` (as ``build_dataset`` writes it) that exist on disk."""
    found = []
    for d in range(len(documents)):
        doc = _document(documents, d)
        source = str(doc.meta.get("source") or "") if doc is not None else ""
        if source.lower().endswith(".pdf") and Path(source).is_file():
            found.append(source)
    return sorted(set(found))


# ------------------------------------------------------------------------------------------ modality gap


def gap_pairs(segments: Sequence[Sequence[Segment]], images: ImageCheck, *, max_pairs: int = 500,
              seed: int = 0) -> list[tuple[Snippet, Snippet]]:
    """(text-only, image-only) views of the same text+image snippets."""
    both = [s for doc in segments for s in doc if s.has("text+image")]
    pairs: list[tuple[Snippet, Snippet]] = []
    for k in _shuffled(len(both), seed, "gap"):
        if len(pairs) >= max_pairs:
            break
        text, image = segment_snippet(both[k], "text", images), segment_snippet(both[k], "image", images)
        if text is not None and image is not None:
            pairs.append((text, image))
    return pairs


def modality_gap(encode: EncodeFn, pairs: Sequence[tuple[Snippet, Snippet]], t: float = 2.0) -> dict[str, float]:
    """How far apart a model puts the text and the image of the same snippets.

    Returns ``pairs``; ``gap``: distance between the centroids of the text and of the image embeddings (Liang et
    al. 2022, "Mind the Gap"); ``alignment``: mean squared distance of paired embeddings and ``uniformity``:
    ``log E exp(-t ||x - y||^2)`` over all embeddings of both kinds (Wang & Isola 2020; lower is better for
    both); ``paired_cosine``: mean cosine of the pairs. Fewer than 2 pairs gives only ``pairs``.
    """
    if len(pairs) < 2:
        return {"pairs": len(pairs)}
    text = normalize(encode([a for a, _ in pairs]))
    image = normalize(encode([b for _, b in pairs]))
    both = np.concatenate([text, image]).astype(np.float64)
    squared = np.maximum(2.0 - 2.0 * both @ both.T, 0.0)  # ||x - y||^2 of unit vectors
    upper = np.triu_indices(len(both), 1)
    return {
        "pairs": len(pairs),
        "gap": float(np.linalg.norm(text.mean(axis=0) - image.mean(axis=0))),
        "alignment": float(np.mean(np.sum((text - image) ** 2, axis=1))),
        "uniformity": float(np.log(np.mean(np.exp(-t * squared[upper])))),
        "paired_cosine": float(np.mean(np.sum(text * image, axis=1))),
    }


# ------------------------------------------------------------------------------------------------- driver


def build_sets(documents: Any, protocols: Sequence[str] = PROTOCOLS, *, max_queries: int = 500, seed: int = 0,
               pdfs: Sequence[str | Path] | None = None, max_pages: int | None = 12,
               tile_dir: str | Path | None = None,
               segments: Sequence[Sequence[Segment]] | None = None,
               page_options: dict[str, Any] | None = None) -> list[RetrievalSet]:
    """The retrieval sets of ``protocols`` for a JSONL (``documents`` from :func:`open_documents`).

    CSR reads ``pdfs``, or when ``None`` the PDFs named in the documents' ``meta.source``; ``page_options``
    (``page_width_px``, ``page_tiles``) render its pages as the model's ingestion would.
    """
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from {list(PROTOCOLS)}")
    segments = read_segments(documents) if segments is None else segments
    images = ImageCheck(documents)
    sets: list[RetrievalSet] = []
    if "anycir" in protocols:
        sets += anycir_sets(segments, images, max_queries=max_queries, seed=seed)
    if "seqcir" in protocols:
        sets.append(seqcir_set(segments, images, max_queries=max_queries, seed=seed))
    if "csr" in protocols:
        sources = [str(p) for p in pdfs] if pdfs is not None else pdf_sources(documents)
        sets.append(csr_set(csr_pairs(sources, max_pages), max_queries=max_queries, seed=seed,
                            max_pages=max_pages, tile_dir=tile_dir, **(page_options or {})))
    if "text" in protocols:
        sets.append(text_set(segments, max_queries=max_queries, seed=seed))
    for rset in sets:
        logger.info("%s: %d queries, %d targets, %s", rset.name, len(rset.queries), rset.n_targets, rset.stats)
    return sets


def run_eval(documents: Any, encode: EncodeFn, protocols: Sequence[str] = PROTOCOLS, *, max_queries: int = 500,
             seed: int = 0, pdfs: Sequence[str | Path] | None = None, max_pages: int | None = 12,
             tile_dir: str | Path | None = None, page_options: dict[str, Any] | None = None,
             baselines: Callable[[list[RetrievalSet]], dict[str, Any]] | None = None,
             points: PointsFn | None = None) -> dict[str, Any]:
    """Build the sets, score them with ``encode`` and measure the modality gap (what ``vc2l eval`` prints).
    With ``points`` (:func:`model_points`), documents are scored by their best point, as the index scores them.

    Returns ``{"results": {set: metrics}, "stats": {set: build counts}, "modality_gap": {...}}``, plus
    ``"baselines": baselines(sets)`` when given (e.g. :func:`vc2l_retriever.baselines.run_baselines`).
    """
    cached = CachedEncoder(encode)
    segments = read_segments(documents)
    sets = build_sets(documents, protocols, max_queries=max_queries, seed=seed, pdfs=pdfs, max_pages=max_pages,
                      tile_dir=tile_dir, segments=segments, page_options=page_options)
    scorer = dense_scorer(cached) if points is None else points_scorer(cached, CachedEncoder(points, stack=False))
    results = evaluate(sets, scorer)
    gap = modality_gap(cached, gap_pairs(segments, ImageCheck(documents), max_pairs=max_queries, seed=seed))
    report = {"results": results, "stats": {s.name: s.stats for s in sets}, "modality_gap": gap}
    if baselines is not None:
        report["baselines"] = baselines(sets)
    return report


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Fixed-width table of :func:`evaluate` results, one set a row."""
    columns = ["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"]
    width = max([len("set")] + [len(name) for name in results])
    lines = [f"{'set':<{width}}  queries  targets  " + "  ".join(f"{c:>9}" for c in columns)]
    for name, m in results.items():
        cells = "  ".join(f"{m[c]:9.3f}" if c in m else f"{'-':>9}" for c in columns)
        lines.append(f"{name:<{width}}  {int(m.get('queries', 0)):7d}  {m.get('targets', 0):7.0f}  {cells}")
    return "\n".join(lines)


def format_gap(gap: dict[str, float]) -> str:
    """One line describing :func:`modality_gap`."""
    if "gap" not in gap:
        return f"modality gap: not measured ({int(gap.get('pairs', 0))} text+image snippets; need 2)"
    return (f"modality gap over {int(gap['pairs'])} text+image snippets: centroid distance {gap['gap']:.3f}, "
            f"alignment {gap['alignment']:.3f}, uniformity {gap['uniformity']:.3f}, "
            f"paired cosine {gap['paired_cosine']:.3f}")


def page_options(model: Any) -> dict[str, Any]:
    """How the model's ingestion renders scanned pages (``page_width_px``, ``page_tiles``), for CSR."""
    from vc2l_retriever.index import default_ingest_options

    options = default_ingest_options(model)
    return {"page_width_px": options.page_width_px, "page_tiles": options.page_tiles}
