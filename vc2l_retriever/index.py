"""Documents in, answers out: VC2L embeddings in a Qdrant collection (the logic; ``integrations/qdrant.py`` wraps it).

One point per snippet, one unnamed vector per point, and a LangChain-compatible payload::

    {"page_content": text,
     "metadata": {"source", "page", "order", "kind", "image_paths", "file_hash", ...caller metadata},
     "thumbnail": base64 PNG <= 128 px (image snippets, thumbnails="bytes"),
     "vc2l": {"content_hash", "file_snippets", "ingest_key"}}

A page the model reads line by line (a scan or screenshot, on a ``grid`` model) is stored as ``k`` points, the model's
``encode_points``, one a window of its lines: a query's best dot product with them scores the page's mean and its best
window together, which finds far more pages than one vector (lab notebook, issue 17). Its first point is the snippet's
point as above, with ``"parts": k`` in its ``vc2l`` record; the others (IDs :func:`part_id`) hold the same payload but
the thumbnail, so filters and deletes by source reach them, and ``"vc2l": {"part": i, "of": first point's ID, ...}``.
Search returns each snippet once, at its best point, with its first point's ID and payload. The
collection ranks by dot product (texts and images are unit vectors: their dot product is the cosine); a collection
made before (cosine) keeps one point a snippet and is read as it is.

Point IDs are UUIDv5 of (source, page, order, content hash), so indexing the same files again writes nothing new,
and a snippet whose content is already stored reuses its vector instead of being encoded again. A changed file's
new points are written first and only then are its other (stale) points deleted, so an interrupted run never
leaves a file with fewer points than before. A file whose bytes and ingest options are unchanged since the last
run (and whose points are all present) is skipped without being parsed.

The collection records the model that made it (embedding size, a hash of its config, a fingerprint of its
weights): in the collection metadata on a server (Qdrant >= 1.16), in ``vc2l.json`` beside an embedded shard.
Opening it with another model or size raises :class:`IndexMismatchError`: vectors of different models are never
mixed.

Points live in a :class:`~vc2l_retriever.store.Store`: Qdrant Edge in this process (``path=``, the default
``./vc2l_index``, or ``":memory:"``) or a Qdrant server (``url=``); this module does not know which. Embedded:

- search is exact until the collection holds :data:`OPTIMIZE_POINTS` points, then an indexing run ends by
  building HNSW (``Store.optimize``); ``source``/``kind`` filters use keyword payload indexes;
- ``path=`` locks the folder to one store: a second process (or a second store in the same process) gets
  :class:`IndexInUseError`. One store is safe to share between threads; use a server when several processes
  must read or write at once;
- every write goes through Edge's write-ahead log, so a killed process keeps each point it was told was written.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from vc2l_retriever.ingest import IngestError, IngestOptions, canvas_budget, discover, ingest_file, refusal
from vc2l_retriever.inputs import InputError, Snippet, open_image

try:
    from qdrant_client import QdrantClient, models
except ImportError as e:  # the core package works without Qdrant; only indexing needs it
    raise ImportError("vc2l_retriever.index needs qdrant-client: pip install 'vc2l-retriever[qdrant]'") from e

from vc2l_retriever.store import (  # noqa: E402 (after the import check above)
    IndexInUseError,  # noqa: F401 (re-exported: the index's errors)
    LegacyIndexError,  # noqa: F401
    Record,
    Store,
    VC2LIndexError,
    open_store,
)

logger = logging.getLogger(__name__)

DEFAULT_PATH = "./vc2l_index"
DEFAULT_COLLECTION = "vc2l"
SOURCE_KEY = "metadata.source"
KIND_KEY = "metadata.kind"
METADATA_KEY = "vc2l"  # key of our record in the collection metadata
# Embedded: build HNSW after an indexing run once the collection holds this many points. Measured here
# (benchmarks/bench_store.py, 384-d): exact search 0.4 ms at 10k points, 2.8 ms at 50k, 5.6 ms at 100k; HNSW
# 0.5 / 1.0 / 1.2 ms, built in 0.7 / 12 / 34 s. Below 50k exact search costs under a quarter of one query's encode
# (~10 ms), so a build is not worth its seconds; later runs that add a few points rebuild nothing (Edge keeps
# them in a small segment searched exactly).
OPTIMIZE_POINTS = 50_000
GRID_PAGE_WIDTH_PX = 1275  # a scanned page read line by line: 150 dpi on US Letter, where body text is legible
THUMBNAIL_PX = 128
FOREIGN_WEIGHTS = "not-a-vc2l-model"  # ModelIdentity.weights_hash of an embedder that is not a VC2L model
# Fixed namespace: the same snippet gets the same ID in every index, on every machine.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://arxiv.org/abs/2510.18703#vc2l-retriever")
_RESERVED = ("source", "page", "order", "kind", "image_paths", "file_hash")
_GLOB_CHARS = "*?["

Thumbnails = Literal["none", "path", "bytes"]
Query = str | Image.Image | Path | Snippet | dict | np.ndarray | Sequence[float]


class IndexMismatchError(VC2LIndexError):
    """The collection was made by another model, or holds vectors of another size."""


class CollectionNotFoundError(VC2LIndexError):
    """The collection does not exist (and was not to be created)."""


# --- Model identity ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelIdentity:
    """What makes two models' vectors comparable: size, config and weights. ``name`` is informational."""

    dim: int
    config_hash: str
    weights_hash: str
    name: str = ""

    def same_model(self, other: ModelIdentity) -> bool:
        """True when vectors of ``other`` may be mixed with ours (``name`` is ignored)."""
        return (self.dim, self.config_hash, self.weights_hash) == (other.dim, other.config_hash, other.weights_hash)

    def describe(self) -> str:
        """Short human-readable form for error messages."""
        label = f"{self.name} " if self.name else ""
        return f"{label}({self.dim}-d, config {self.config_hash[:10]}, weights {self.weights_hash[:10]})"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the collection metadata."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelIdentity:
        """Inverse of :meth:`to_dict`; ignores keys it does not know (written by newer versions)."""
        return cls(int(data["dim"]), str(data["config_hash"]), str(data["weights_hash"]), str(data.get("name", "")))


def model_identity(model: Any, name: str = "") -> ModelIdentity:
    """Fingerprint a sentence-transformers model: embedding size, config hash, weights fingerprint.

    The weights fingerprint hashes each tensor's name, shape and a strided sample of up to 4,096 of its values (as
    float32), so it is cheap even for large models and changes whenever the weights are retrained. It depends on
    the dtype the weights are held in: a model cast to half precision counts as another model.
    """
    first = model[0]
    config = first.get_config_dict() if hasattr(first, "get_config_dict") else {}
    config = {"module": type(first).__qualname__, "config": config}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy()
        h.update(f"{key}{tuple(tensor.shape)}".encode())
        h.update(sample.tobytes())
    return ModelIdentity(int(model.get_embedding_dimension()), config_hash, h.hexdigest(), name)


# --- Point IDs, payloads, hits ---------------------------------------------------------------------------------


def hash_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(snippet: Snippet) -> str:
    """SHA-256 of what gets rendered: kind, text and each image (file bytes, or mode + size + pixels)."""
    h = hashlib.sha256()
    h.update(f"{snippet.kind}\x00{snippet.text}\x00".encode())
    for image in snippet.images:
        if isinstance(image, Path):
            h.update(b"file:" + hash_file(image).encode())
        else:
            h.update(f"pil:{image.mode}:{image.size}:".encode())
            h.update(image.tobytes())
    return h.hexdigest()


def point_id(snippet: Snippet, content: str | None = None) -> str:
    """Deterministic point ID: UUIDv5 of source, locator (page, order) and content hash."""
    content = content_hash(snippet) if content is None else content
    return str(uuid.uuid5(_NAMESPACE, json.dumps([snippet.source, snippet.page, snippet.order, content])))


def part_id(first: str, part: int) -> str:
    """ID of a page's point ``part`` (1, 2, ...), derived from its first point's ID."""
    return str(uuid.uuid5(_NAMESPACE, f"{first}#{part}"))


def part_payload(payload: dict[str, Any], first: str, part: int) -> dict[str, Any]:
    """The payload of a page's extra point: the page's, without its thumbnail (a page read as canvases has no text,
    so only the thumbnail would be stored again), and where it belongs."""
    rest = {k: v for k, v in payload.items() if k not in ("thumbnail", METADATA_KEY)}
    return {**rest, METADATA_KEY: {**payload[METADATA_KEY], "part": part, "of": first}}


def snippet_points(first: str, payload: dict[str, Any], vectors: Sequence[Sequence[float]]) -> list[Record]:
    """A snippet's points: one, or for a page read as ``k`` windows its first point (ID ``first``, the payload,
    ``"parts": k``) and ``k - 1`` extra points (:func:`part_id`, :func:`part_payload`)."""
    if len(vectors) > 1:
        payload = {**payload, METADATA_KEY: {**payload[METADATA_KEY], "parts": len(vectors)}}
    return [Record(first, payload, [float(v) for v in vectors[0]])] + [
        Record(part_id(first, i), part_payload(payload, first, i), [float(v) for v in vector])
        for i, vector in enumerate(vectors[1:], start=1)]


def thumbnail_b64(image: Image.Image | Path, size: int = THUMBNAIL_PX) -> str:
    """A PNG of at most ``size`` x ``size`` pixels, base64-encoded (for result previews)."""
    thumb = open_image(image)  # always a new RGB image, so the caller's image is not resized in place
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def make_payload(snippet: Snippet, *, content: str, file_hash: str | None = None, file_snippets: int | None = None,
                 ingest_key: str | None = None, thumbnails: Thumbnails = "bytes") -> dict[str, Any]:
    """The point payload (layout in the module docstring). Caller metadata never overrides reserved keys."""
    caller = {k: v for k, v in snippet.metadata.items() if k not in _RESERVED}
    # Round-trip through JSON so a server accepts it and embedded mode stores the same thing.
    metadata: dict[str, Any] = json.loads(json.dumps(caller, default=str))
    metadata.update(
        source=snippet.source, page=snippet.page, order=snippet.order, kind=snippet.kind,
        image_paths=[str(p) for p in snippet.images if isinstance(p, Path)], file_hash=file_hash,
    )
    payload: dict[str, Any] = {
        "page_content": snippet.text,
        "metadata": metadata,
        "vc2l": {"content_hash": content, "file_snippets": file_snippets, "ingest_key": ingest_key},
    }
    if thumbnails == "bytes" and snippet.images:
        payload["thumbnail"] = thumbnail_b64(snippet.images[0])
    return json_safe(payload)


def json_safe(value: Any) -> Any:
    """``value`` with every string valid UTF-8, as JSON and Qdrant require.

    A file name that is not valid UTF-8 reaches Python as lone surrogates (``surrogateescape``); its bytes are
    written as ``\\xNN`` escapes instead, the same way on every run, so the stored ``source`` still identifies
    the file (change detection, deletes, pruning) and differs from every other file's.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            try:
                raw = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # a surrogate that no file name produced
                raw = value.encode("utf-8", "surrogatepass")
            return raw.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def snippet_from_payload(payload: dict[str, Any]) -> Snippet:
    """Rebuild the snippet a point was made from: image files as paths, else the thumbnail, else no image."""
    md = dict(payload.get("metadata") or {})
    images: list[Image.Image | Path] = [Path(p) for p in md.get("image_paths") or []]
    if not images and payload.get("thumbnail"):
        images = [Image.open(io.BytesIO(base64.b64decode(payload["thumbnail"]))).convert("RGB")]
    return Snippet(
        text=payload.get("page_content") or "", images=images, source=md.get("source"), page=md.get("page"),
        order=md.get("order"), kind=md.get("kind") or "",
        metadata={k: v for k, v in md.items() if k not in _RESERVED},
    )


@dataclass
class Hit:
    """One search result: similarity (a text's cosine; for a page, the mean of its mean vector's and best window's),
    the snippet's point ID, its stored payload and the snippet rebuilt from it."""

    score: float
    id: str
    payload: dict[str, Any]
    snippet: Snippet

    @classmethod
    def from_record(cls, record: Record) -> Hit:
        """From a store's search result."""
        return cls(record.score, record.id, record.payload, snippet_from_payload(record.payload))

    @property
    def source(self) -> str | None:
        """The document the hit came from."""
        return self.snippet.source

    @property
    def text(self) -> str:
        """The hit's text (``page_content``)."""
        return self.snippet.text

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no thumbnail)."""
        return {"score": self.score, "id": self.id, "text": self.text,
                "metadata": self.payload.get("metadata", {})}


@dataclass
class HitGroup:
    """Hits sharing one ``group_by`` value (by default one source document)."""

    key: Any
    hits: list[Hit]


@dataclass
class IndexReport:
    """What one ``index`` call did.

    Attributes:
        files: Files parsed and written.
        snippets: Snippets written (``encoded`` + ``reused``).
        encoded: Snippets run through the model.
        reused: Snippets whose content was already stored: their vectors were reused, not recomputed.
        replaced: Stale points removed from changed files.
        pruned: Sources removed because their file no longer exists under a folder being indexed (``prune=True``).
        unchanged: Files skipped because their bytes and ingest options had not changed.
        skipped: ``(item, reason)`` for each file or snippet that could not be indexed.
        seconds: Wall time.
        interrupted: The run was asked to stop (``stop``) and ended after the batch in progress.
    """

    files: int = 0
    snippets: int = 0
    encoded: int = 0
    reused: int = 0
    replaced: int = 0
    pruned: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def summary(self) -> str:
        """Multi-line human summary (the CLI prints it)."""
        lines = [
            f"indexed {self.files} files, {self.snippets} snippets ({self.encoded} encoded, {self.reused} reused) "
            f"in {self.seconds:.1f} s; {len(self.unchanged)} files unchanged; {self.replaced} stale points "
            f"removed; {len(self.pruned)} deleted files pruned; {len(self.skipped)} skipped"
        ]
        lines += [f"  skipped {item}: {reason}" for item, reason in self.skipped]
        if self.interrupted:
            lines.append("  interrupted: stopped after the batch in progress; run again to finish "
                         "(finished files are skipped)")
        return "\n".join(lines)


# --- Opening and checking a collection ---------------------------------------------------------------------------


def open_index(path: str | os.PathLike[str] | None = None, *, url: str | None = None, api_key: str | None = None,
               collection: str = DEFAULT_COLLECTION, client: QdrantClient | None = None, **kwargs: Any) -> Store:
    """The collection's :class:`~vc2l_retriever.store.Store`: embedded in ``path`` (default ``./vc2l_index``,
    or ``":memory:"``), on the server at ``url``, or through an existing ``client`` (not closed by the store).

    Raises:
        IndexInUseError: ``path`` is open in another process or store.
        LegacyIndexError: ``path`` was written by qdrant-client's local mode; ``vc2l migrate-index`` converts it.
    """
    return open_store(path, name=collection, url=url, api_key=api_key, client=client, **kwargs)


def ensure_collection(store: Store, identity: ModelIdentity, *, create: bool = True, **options: Any) -> None:
    """Create the collection for ``identity``'s vectors, or check that the existing one was made by the same model.

    ``options`` (``shard_number``, ``replication_factor``, ``on_disk``, ``quantization``) apply on a server, at
    creation only.

    Raises:
        IndexMismatchError: The collection exists with another model or vector size.
        CollectionNotFoundError: It does not exist and ``create`` is False.
    """
    if store.exists():
        check_collection(store, identity)
        return
    if not create:
        raise CollectionNotFoundError(f"no collection {store.name!r} in this index (index some documents first)")
    # Another tool's embedder need not make unit vectors, which a dot product would rank by length.
    distance = "cosine" if identity.weights_hash == FOREIGN_WEIGHTS else "dot"
    store.create(identity.dim, {METADATA_KEY: identity.to_dict()}, distance=distance, **options)
    logger.info("created collection %r for %s", store.name, identity.describe())


def stored_identity(store: Store) -> tuple[int | None, ModelIdentity | None]:
    """The vector size and model recorded in the collection (``None`` where absent)."""
    size, metadata = store.describe()
    record = metadata.get(METADATA_KEY)
    return size, ModelIdentity.from_dict(record) if isinstance(record, dict) else None


def check_collection(store: Store, identity: ModelIdentity) -> None:
    """Raise :class:`IndexMismatchError` unless the collection was made for ``identity``'s vectors."""
    size, stored = stored_identity(store)
    name, advice = store.name, "use another collection name, or delete this one and index again"
    if size != identity.dim:
        got = f"{size}-d vectors" if size else "named vectors"
        raise IndexMismatchError(
            f"collection {name!r} holds {got} but the model makes {identity.dim}-d vectors; {advice}")
    if stored is None:
        raise IndexMismatchError(
            f"collection {name!r} has no VC2L model record (made by another tool, or by a Qdrant server older than "
            f"1.16, which drops collection metadata); {advice}")
    if not stored.same_model(identity):
        raise IndexMismatchError(
            f"collection {name!r} was built with model {stored.describe()}, not {identity.describe()}; "
            f"vectors of different models cannot be mixed: {advice}")


def collection_info(store: Store) -> dict[str, Any]:
    """Points, snippets (a page stored as several points counts once), vector size, similarity and recorded model of
    the collection (no model needed)."""
    if not store.exists():
        raise CollectionNotFoundError(f"no collection {store.name!r} in this index")
    size, stored = stored_identity(store)
    firsts = models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key=f"{METADATA_KEY}.of"))])
    return {"collection": store.name, "points": store.count(), "snippets": store.count(firsts), "dim": size,
            "distance": store.distance(), "model": stored.to_dict() if stored else None, "embedded": store.embedded}


# --- Filters -----------------------------------------------------------------------------------------------------


def _source_is(source: str) -> models.FieldCondition:
    return models.FieldCondition(key=SOURCE_KEY, match=models.MatchValue(value=source))


def list_sources(store: Store) -> list[str]:
    """Distinct ``metadata.source`` values in the collection."""
    return sorted(str(v) for v in store.facet(SOURCE_KEY))


def source_condition(store: Store, pattern: str) -> models.FieldCondition:
    """Match sources equal to ``pattern`` or, if it holds ``*?[``, matching it as a glob (``*`` spans ``/``).

    A relative pattern also matches as an absolute path from the working directory, since sources are stored as
    absolute paths.
    """
    candidates = {pattern}
    if not os.path.isabs(pattern) and not pattern.startswith("*"):
        candidates.add(os.path.join(os.path.abspath("."), pattern))
    if any(c in pattern for c in _GLOB_CHARS):
        values = [s for s in list_sources(store) if any(fnmatch.fnmatchcase(s, c) for c in candidates)]
    else:
        values = sorted(candidates)
    return models.FieldCondition(key=SOURCE_KEY, match=models.MatchAny(any=values))


def build_filter(store: Store, source: str | None = None,
                 extra: models.Filter | None = None) -> models.Filter | None:
    """Combine a ``source`` pattern and a caller's Qdrant filter (both must hold)."""
    if source is None:
        return extra
    condition = source_condition(store, source)
    return models.Filter(must=[condition, extra]) if extra is not None else models.Filter(must=[condition])


# --- Writing -----------------------------------------------------------------------------------------------------


@dataclass
class _FileJob:
    """One file being indexed; its stale points are removed once all of its snippets are written."""

    source: str
    file_hash: str
    ingest_key: str
    total: int  # snippets the file produced (known up front: ingest_file returns a list)
    queued_all: bool = False
    done: int = 0
    failed: int = 0
    ids: set[str] = field(default_factory=set)


@dataclass
class _Item:
    snippet: Snippet
    job: _FileJob | None
    content: str = ""
    id: str = ""


def _label(snippet: Snippet) -> str:
    where = [f"page {snippet.page}" if snippet.page is not None else "",
             f"item {snippet.order}" if snippet.order is not None else ""]
    return " ".join([snippet.source or "snippet", *[w for w in where if w]])


class Writer:
    """Buffers snippets, encodes new ones in batches, upserts them and retires stale points of changed files."""

    def __init__(self, store: Store, model: Any, report: IndexReport, *,
                 batch_size: int = 32, thumbnails: Thumbnails = "bytes", progress: bool | None = None) -> None:
        if thumbnails not in ("none", "path", "bytes"):
            raise ValueError(f"thumbnails must be 'none', 'path' or 'bytes', got {thumbnails!r}")
        self.store, self.model, self.report = store, model, report
        self.batch_size, self.thumbnails = max(1, batch_size), thumbnails
        # Several points a page only where the collection ranks by dot product (a cosine one would rescale them).
        self.several = store.distance() == "dot" and hasattr(model, "encode_points")
        self.buffer: list[_Item] = []
        self.jobs: list[_FileJob] = []
        # disable=None: shown on a terminal, silent in logs and tests.
        self.bar = tqdm(desc="indexing", unit="snippet", disable=None if progress is None else not progress)

    def start_file(self, job: _FileJob) -> None:
        """Register a file whose snippets follow."""
        self.jobs.append(job)

    def add(self, snippet: Snippet, job: _FileJob | None = None) -> None:
        """Queue one snippet; a full buffer is written at once."""
        self.buffer.append(_Item(snippet, job))
        if len(self.buffer) >= self.batch_size:
            self.flush()

    def end_file(self, job: _FileJob) -> None:
        """All of ``job``'s snippets are queued."""
        job.queued_all = True
        self._retire_finished()

    def close(self) -> None:
        """Write what is left and close the progress bar."""
        self.flush()
        self.bar.close()

    def flush(self) -> None:
        """Encode (new content only) and upsert the buffered snippets."""
        items, self.buffer = self.buffer, []
        ready = [item for item in items if self._identify(item)]
        if ready:
            existing = self._stored_vectors([item.id for item in ready])
            fresh = self._encode([item for item in ready if item.id not in existing])
            points = [p for item in ready for p in self._points(item, existing, fresh)]
            if points:
                self.store.upsert(points)
                logger.debug("wrote %d points", len(points))  # acknowledged: durable from here (crash tests)
        for item in items:
            if item.job is not None:
                item.job.done += 1
        self.bar.update(len(items))
        self._retire_finished()

    def _fail(self, item: _Item, error: Exception) -> None:
        logger.warning("skipped %s: %s", _label(item.snippet), error)
        self.report.skipped.append((_label(item.snippet), str(error)))
        if item.job is not None:
            item.job.failed += 1

    def _identify(self, item: _Item) -> bool:
        try:
            item.content = content_hash(item.snippet)
        except OSError as e:
            self._fail(item, InputError(f"cannot read image ({e})"))
            return False
        item.id = point_id(item.snippet, item.content)
        return True

    def _stored_vectors(self, ids: list[str]) -> dict[str, list[list[float]]]:
        """The vectors of snippets already stored whole (a page with all of its points), by first point ID."""
        records = self.store.retrieve(sorted(set(ids)), with_vectors=True, with_payload=True)
        out = {r.id: [r.vector] for r in records if r.vector is not None}
        parts = {r.id: int(r.payload.get(METADATA_KEY, {}).get("parts") or 1) for r in records if r.id in out}
        wanted = [part_id(first, i) for first, k in parts.items() for i in range(1, k)]
        found = {r.id: r.vector for r in self.store.retrieve(wanted, with_vectors=True, with_payload=False)
                 } if wanted else {}
        for first, k in parts.items():
            rest = [found.get(part_id(first, i)) for i in range(1, k)]
            if any(v is None for v in rest):
                del out[first]  # a write cut short: encode the page again
            else:
                out[first] += rest
        return out

    def _encode(self, items: list[_Item]) -> dict[str, np.ndarray]:
        """First point ID -> the snippet's points ``(k, dim)``: one unless a page is stored as several."""
        if not items:
            return {}
        snippets = [item.snippet for item in items]
        try:
            if self.several:
                vectors = self.model.encode_points(snippets, batch_size=self.batch_size)
            else:
                vectors = self.model.encode(snippets, batch_size=self.batch_size, convert_to_numpy=True,
                                            show_progress_bar=False)[:, None]
        except (ValueError, OSError, TypeError) as e:  # InputError is a ValueError
            if len(items) == 1:
                self._fail(items[0], e)
                return {}
            # One bad image must not sink the batch: encode one by one to find it.
            out: dict[str, np.ndarray] = {}
            for item in items:
                out.update(self._encode([item]))
            return out
        self.report.encoded += len(items)
        return {item.id: vector for item, vector in zip(items, vectors, strict=True)}

    def _points(self, item: _Item, existing: dict[str, list[list[float]]],
                fresh: dict[str, np.ndarray]) -> list[Record]:
        vectors = existing.get(item.id)
        if vectors is None:
            if item.id not in fresh:
                return []  # failed to encode; already reported
            vectors = fresh[item.id].tolist()
        job = item.job
        try:
            payload = make_payload(item.snippet, content=item.content, thumbnails=self.thumbnails,
                                   file_hash=job.file_hash if job else None, file_snippets=job.total if job else None,
                                   ingest_key=job.ingest_key if job else None)
        except (InputError, OSError) as e:
            self._fail(item, e)
            return []
        points = snippet_points(item.id, payload, vectors)
        if job is not None:
            job.ids.update(p.id for p in points)
        self.report.snippets += 1
        self.report.reused += item.id in existing
        return points

    def _retire_finished(self) -> None:
        pending = []
        for job in self.jobs:
            if job.queued_all and job.done == job.total:
                self._retire(job)
            else:
                pending.append(job)
        self.jobs = pending

    def _retire(self, job: _FileJob) -> None:
        """Delete the file's points that the new version did not write (after the new ones are stored).

        If some of the new snippets failed, the old points stay: stale hits are better than lost ones, and the
        file is processed again on the next run (its point count no longer matches).
        """
        stale = models.Filter(must=[_source_is(job.source)], must_not=[models.HasIdCondition(has_id=sorted(job.ids))])
        n = self.store.count(stale)
        if n and job.failed:
            logger.warning("%s: kept %d older points because %d new snippets failed", job.source, n, job.failed)
        elif n:
            self.store.delete(stale)
            self.report.replaced += n
        self.report.files += 1
        self.bar.set_postfix(files=self.report.files, refresh=False)


class Manifest:
    """What the index already holds per source file, to skip unchanged files without parsing them.

    Embedded mode reads the whole collection's bookkeeping once (one local pass beats a query per file); on a
    server each file's points are read through the ``metadata.source`` payload index. Only that indexed field is
    filtered on, so servers in strict mode (no filtering on unindexed fields) accept it.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._all = self._scan(None) if store.embedded else None

    def _scan(self, scroll_filter: models.Filter | None) -> dict[str, tuple[set[tuple[Any, ...]], int]]:
        """``source -> ({(file_hash, ingest_key, file_snippets), ...}, number of points)``."""
        states: dict[str, tuple[set[tuple[Any, ...]], int]] = {}
        for r in self.store.scroll(scroll_filter, keys=[SOURCE_KEY, "metadata.file_hash", "vc2l"]):
            md, book = r.payload.get("metadata", {}), r.payload.get("vc2l", {})
            if book.get("of"):  # a page's extra point: its snippet is counted once, by its first point
                continue
            versions, n = states.get(md.get("source"), (set(), 0))
            versions.add((md.get("file_hash"), book.get("ingest_key"), book.get("file_snippets")))
            states[md.get("source")] = (versions, n + 1)
        return states

    def unchanged(self, source: str, file_hash: str, ingest_key: str) -> bool:
        """True if every point of ``source`` was made from these bytes and options, and none is missing."""
        states = self._all if self._all is not None else self._scan(models.Filter(must=[_source_is(source)]))
        versions, n = states.get(source, (set(), 0))
        return len(versions) == 1 and next(iter(versions)) == (file_hash, ingest_key, n)


def options_key(options: IngestOptions) -> str:
    """Hash of the ingest options: a file indexed with other options is re-parsed."""
    return hashlib.sha256(json.dumps(asdict(options), sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_ingest_options(model: Any) -> IngestOptions:
    """Ingest options sized to the model's canvas, so the renderer never cuts a snippet's text."""
    render = getattr(getattr(model[0], "config", None), "render", None)
    if render is None:
        return IngestOptions()
    if render.layout == "grid":  # scanned pages whole, read line by line (``strips.py``) at a legible resolution
        return IngestOptions(max_chars=canvas_budget(render), page_tiles=False, page_width_px=GRID_PAGE_WIDTH_PX)
    return IngestOptions(max_chars=canvas_budget(render))


def _files(paths: Iterable[str | os.PathLike[str]], options: IngestOptions) -> Iterator[tuple[Path, IngestOptions]]:
    """Files to index with their options, under ``ingest.ingest``'s containment rule: a file found in a folder
    argument must resolve inside it (``IngestOptions.root``) and its images may come from anywhere inside it.
    Entries the rule refuses (symlinks out of the folder, symlink loops) are yielded too, so that
    :func:`_index_file` refuses them with their reason (before opening them) and ``IndexReport.skipped`` names them."""
    seen: set[str] = set()
    for given in paths:
        root, file_options, inside = Path(given), options, ""
        if root.is_dir():
            folder = Path(os.path.abspath(root))
            file_options = replace(options, root=options.root or folder, image_root=options.image_root or folder)
            inside = os.path.join(os.path.realpath(root), "")
        for path in discover([root], follow_symlinks=options.follow_symlinks, include_refused=True):
            real = os.path.realpath(path)
            # A file reached twice is indexed once; links out of the folder are each named, even to one target.
            key = real if real.startswith(inside) else os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                yield path, file_options


def _ingest(path: Path, source: str, options: IngestOptions, report: IndexReport) -> list[Snippet] | None:
    """The file's snippets, or ``None`` after recording why it was skipped."""
    try:
        return ingest_file(path, options)
    except IngestError as e:
        reason = e.reason
    except Exception as e:  # a parser bug or a missing optional dependency must not end the run
        reason = f"{type(e).__name__}: {e}"
    logger.warning("skipped %s: %s", source, reason)
    report.skipped.append((source, reason))
    return None


def index_paths(store: Store, model: Any, paths: Iterable[str | os.PathLike[str]], *,
                options: IngestOptions | None = None, batch_size: int = 32, thumbnails: Thumbnails = "bytes",
                progress: bool | None = None, prune: bool = False,
                stop: Callable[[], bool] | None = None) -> IndexReport:
    """Index files and folders, streamed: one file's snippets and one batch of encoded images in memory at a time.

    A file that cannot be read or parsed is reported in ``IndexReport.skipped`` and keeps its old points. With
    ``prune=True``, points of files that were indexed under a given folder but no longer exist are deleted, so
    the collection mirrors the folder. ``stop`` is polled after every snippet: once it returns True, the batch in
    progress is written and the run ends with ``report.interrupted`` set (a later run finishes the work).
    """
    paths = [os.fspath(p) for p in paths]
    seen_sources: set[str] = set()
    start, report = time.perf_counter(), IndexReport()
    options = default_ingest_options(model) if options is None else options
    manifest = Manifest(store)
    writer = Writer(store, model, report, batch_size=batch_size, thumbnails=thumbnails, progress=progress)
    try:
        for path, file_options in _files(paths, options):
            if stop is not None and stop():
                report.interrupted = True
                break
            report.interrupted = not _index_file(writer, manifest, path, file_options, seen_sources, stop)
            if report.interrupted:
                break
    finally:
        writer.close()
    if prune:
        _prune(store, paths, seen_sources, report)
    optimize_if_worth_it(store, report)
    report.seconds = time.perf_counter() - start
    return report


def _index_file(writer: Writer, manifest: Manifest, path: Path, options: IngestOptions, seen: set[str],
                stop: Callable[[], bool] | None) -> bool:
    """Index one file unless it is refused, unreadable or unchanged; False if ``stop`` fired part-way."""
    report = writer.report
    source, key = os.path.abspath(path), options_key(options)  # ingest's source: the absolute path
    stored = json_safe(source)  # as the payload holds it
    seen.add(stored)
    refused = refusal(path, options)  # asked before hashing: a link out of the folder is never opened
    if refused:
        _refuse(writer.store, stored, source, refused, report)
        return True
    try:
        digest = hash_file(path)
    except OSError as e:
        report.skipped.append((source, f"cannot read file ({e.strerror or e})"))
        return True
    if manifest.unchanged(stored, digest, key):
        report.unchanged.append(source)
        return True
    snippets = _ingest(path, source, options, report)
    if snippets is None:
        return True
    job = _FileJob(stored, digest, key, total=len(snippets))
    return _queue_file(writer, job, snippets, stop)


def _refuse(store: Store, stored: str, source: str, reason: str, report: IndexReport) -> None:
    """Skip a file the containment rule refuses, and remove points an earlier run made from it (before the rule
    existed, or with ``follow_symlinks``): what lies outside the folder must not stay searchable."""
    earlier = models.Filter(must=[_source_is(stored)])
    n = store.count(earlier)
    if n:
        store.delete(earlier)
        report.replaced += n
        reason += f"; its {n} earlier points were removed"
    logger.warning("skipped %s: %s", source, reason)
    report.skipped.append((source, reason))


def _queue_file(writer: Writer, job: _FileJob, snippets: list[Snippet], stop: Callable[[], bool] | None) -> bool:
    """Queue a file's snippets; False if ``stop`` fired first (the file stays unfinished: its old points are kept)."""
    writer.start_file(job)
    for snippet in snippets:
        writer.add(snippet, job)
        if stop is not None and stop():
            return False
    writer.end_file(job)
    return True


def _prune(store: Store, paths: list[str], seen: set[str], report: IndexReport) -> None:
    """Delete sources under the given folders that this run did not find on disk."""
    roots = [os.path.join(os.path.abspath(p), "") for p in paths if os.path.isdir(p)]
    for source in list_sources(store):
        if source not in seen and any(source.startswith(r) for r in roots) and not os.path.exists(source):
            store.delete(models.Filter(must=[_source_is(source)]))
            report.pruned.append(source)


def optimize_if_worth_it(store: Store, report: IndexReport) -> None:
    """Build the embedded index's HNSW graph after a run that changed it, once it holds enough points to pay.

    Below :data:`OPTIMIZE_POINTS` exact search is already fast (see ``benchmarks/bench_store.py``) and building
    the graph costs more than it saves; a server optimizes on its own.
    """
    if store.embedded and (report.snippets or report.replaced or report.pruned):
        if store.count() >= OPTIMIZE_POINTS:
            start = time.perf_counter()
            store.optimize()
            logger.info("optimized %r (HNSW) in %.1f s", store.name, time.perf_counter() - start)


def index_snippets(store: Store, model: Any, snippets: Iterable[Snippet], *,
                   batch_size: int = 32, thumbnails: Thumbnails = "bytes", progress: bool | None = None
                   ) -> IndexReport:
    """Index snippets you made yourself. Same content, same IDs; nothing is deleted (no file to compare)."""
    start, report = time.perf_counter(), IndexReport()
    writer = Writer(store, model, report, batch_size=batch_size, thumbnails=thumbnails, progress=progress)
    try:
        for i, snippet in enumerate(snippets):
            if not isinstance(snippet, Snippet):
                raise TypeError(f"item {i}: expected a Snippet, got {type(snippet).__name__}")
            writer.add(snippet)
    finally:
        writer.close()
    optimize_if_worth_it(store, report)
    report.seconds = time.perf_counter() - start
    return report


def index(store: Store, model: Any,
          items: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Iterable[Snippet], **kwargs: Any
          ) -> IndexReport:
    """Index paths (files or folders) or :class:`Snippet` objects, told apart by the first item."""
    if isinstance(items, Snippet):
        items = [items]
    if isinstance(items, (str, os.PathLike)):
        return index_paths(store, model, [items], **kwargs)
    iterator = iter(items)
    first = next(iterator, None)
    if first is None:
        return IndexReport()
    rest = _chain(first, iterator)
    if isinstance(first, Snippet):
        kwargs.pop("options", None)
        kwargs.pop("stop", None)  # only file runs can stop part-way (and be finished by the next run)
        return index_snippets(store, model, rest, **kwargs)
    return index_paths(store, model, rest, **kwargs)  # type: ignore[arg-type]


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


# --- Reading -----------------------------------------------------------------------------------------------------


def encode_query(model: Any, query: Query) -> list[float]:
    """Embed a query: text (``str``), a PIL image, an image file (``pathlib.Path``), a Snippet or a
    ``{"text", "image"}`` dict; a ready vector (numpy array or list of floats) passes through."""
    if isinstance(query, np.ndarray):
        return query.astype(np.float32).reshape(-1).tolist()
    if isinstance(query, (list, tuple)) and query and all(isinstance(v, (int, float)) for v in query):
        return [float(v) for v in query]
    if isinstance(query, Path) and not query.is_file():
        raise FileNotFoundError(f"query image not found: {query}")
    if not isinstance(query, (str, Image.Image, Path, Snippet, dict)):
        raise TypeError(f"cannot search with a {type(query).__name__}; pass str, PIL.Image.Image, pathlib.Path, "
                        "a Snippet or a vector")
    return model.encode([query], convert_to_numpy=True, show_progress_bar=False)[0].tolist()


def nearest(store: Store, vector: Sequence[float], limit: int, *, filter: models.Filter | None = None,
            score_threshold: float | None = None, offset: int = 0) -> list[Record]:
    """The ``limit`` snippets nearest to ``vector`` after skipping ``offset``, best first: a page stored as several
    points comes once, scored by its best point, with its first point's ID and payload."""
    return _widen(store, vector, offset + limit, filter, score_threshold, lambda hits: len(hits) >= offset + limit
                  )[offset:offset + limit]


def _widen(store: Store, vector: Sequence[float], want: int, filter: models.Filter | None,
           score_threshold: float | None, enough: Callable[[list[Record]], bool]) -> list[Record]:
    """Snippets by :func:`_by_snippet`, from ever more points until ``enough`` holds or the points run out."""
    want = max(2 * want, 16)  # a page's extra points take places among the nearest ones
    while True:
        points = store.query(vector, want, filter=filter, score_threshold=score_threshold)
        hits = _by_snippet(store, points)
        if len(points) < want or enough(hits):
            return hits
        want *= 4


def _by_snippet(store: Store, points: list[Record]) -> list[Record]:
    """Fold a page's points into one hit at its best score, under its first point's ID and payload."""
    best: dict[str, Record] = {}
    for p in points:
        first = p.payload[METADATA_KEY]["of"] if is_part(p) else p.id
        if first not in best:
            best[first] = p if first == p.id else replace(p, id=first)
    missing = [first for first, hit in best.items() if is_part(hit)]
    for record in store.retrieve(missing) if missing else []:
        best[record.id] = replace(best[record.id], payload=record.payload)
    return list(best.values())


def search(store: Store, model: Any, query: Query, *, limit: int = 10, source: str | None = None,
           filter: models.Filter | None = None, score_threshold: float | None = None, offset: int = 0) -> list[Hit]:
    """Nearest snippets to ``query``, best first, optionally restricted to ``source`` (exact or glob)."""
    records = nearest(store, encode_query(model, query), limit, filter=build_filter(store, source, filter),
                      score_threshold=score_threshold, offset=offset)
    return [Hit.from_record(r) for r in records]


def search_groups(store: Store, model: Any, query: Query, *, group_by: str = SOURCE_KEY, limit: int = 5,
                  group_size: int = 3, source: str | None = None,
                  filter: models.Filter | None = None) -> list[HitGroup]:
    """Best ``limit`` groups (by default: documents) in order of their best hit, each with up to ``group_size``
    snippets. Hits whose ``group_by`` value is missing, a list or an object are left out."""
    def groups_of(hits: list[Record]) -> dict[Any, list[Record]]:
        groups: dict[Any, list[Record]] = {}
        for hit in hits:
            key = _lookup(hit.payload, group_by)
            if key is None or isinstance(key, (list, dict)) or (key not in groups and len(groups) >= limit):
                continue
            members = groups.setdefault(key, [])
            if len(members) < group_size:
                members.append(hit)
        return groups

    # Enough once ``limit`` groups are open: filling each would read the whole collection for short documents.
    hits = _widen(store, encode_query(model, query), limit * group_size * 2, build_filter(store, source, filter),
                  None, lambda hits: len(groups_of(hits)) >= limit)
    return [HitGroup(key, [Hit.from_record(r) for r in members]) for key, members in groups_of(hits).items()]


def _lookup(payload: dict[str, Any], key: str) -> Any:
    """``payload["metadata"]["source"]`` for ``key="metadata.source"``."""
    value: Any = payload
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def count(store: Store, source: str | None = None) -> int:
    """Exact number of points, optionally of one ``source`` (exact or glob)."""
    return store.count(build_filter(store, source))


def delete(store: Store, source: str) -> int:
    """Delete the points of ``source`` (exact or glob); returns how many were deleted."""
    selector = build_filter(store, source)
    n = store.count(selector)
    if n:
        store.delete(selector)
    return n


def with_parts(ids: Sequence[str]) -> models.Filter:
    """Points with these IDs, and the extra points of the pages among them (to delete or search snippets by ID)."""
    return models.Filter(should=[models.HasIdCondition(has_id=list(ids)),
                                 models.FieldCondition(key=f"{METADATA_KEY}.of", match=models.MatchAny(any=list(ids)))])


def is_part(record: Record) -> bool:
    """True for a page's extra point (a reader listing snippets skips it: the page's first point stands for it)."""
    return bool((record.payload.get(METADATA_KEY) or {}).get("of"))
