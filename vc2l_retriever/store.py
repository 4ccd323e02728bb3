"""Where embeddings live: one small interface over one Qdrant collection, with two backends.

- :class:`EdgeStore` (embedded, the default ``./vc2l_index`` or ``":memory:"``): Qdrant's own engine running in
  this process (``qdrant-edge-py``): HNSW after :meth:`Store.optimize`, payload indexes, a write-ahead log, safe
  to share between threads. A folder holds one shard per collection::

      ./vc2l_index/vc2l-edge.json               format marker
      ./vc2l_index/.lock                        held by the process that has the folder open
      ./vc2l_index/collections/<name>/shard/    the Edge shard (segments, WAL, config)
      ./vc2l_index/collections/<name>/vc2l.json the model that made the vectors (size, config, weights)

- :class:`ServerStore` (``url=``, or any ``QdrantClient``): a Qdrant server or cluster through qdrant-client,
  with the model recorded in the collection's metadata.

Everything above this module (the indexing pipeline, search, the CLI, the framework adapters) talks to
:class:`Store` and does not know which backend it has. Filters are qdrant-client's ``models.Filter`` for both:
the Edge backend translates them (:func:`edge_filter`). Nothing here unpickles anything: Edge stores its own
binary segments and the model record is JSON.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

try:
    import qdrant_edge as qe
except ImportError:  # the server backend works without it
    qe = None

EDGE_MARKER = "vc2l-edge.json"
# Keyword indexes: filters, facets and deletes by source; and the extra points of a page by the snippet they belong to.
PAYLOAD_INDEXES = ("metadata.source", "metadata.kind", "vc2l.of")
# Similarities a collection can rank by. New collections use "dot": texts and images are stored as unit vectors (the
# dot product is their cosine) and a page as several points whose dot product is designed (``index.py``). Collections
# made before that rank by "cosine" and are read as they are.
DISTANCES = ("dot", "cosine")


class VC2LIndexError(Exception):
    """Base class of the errors raised by the store and the index."""


class IndexInUseError(VC2LIndexError):
    """An embedded index folder is already open in another process or store."""


class LegacyIndexError(VC2LIndexError):
    """The folder holds an index written by qdrant-client's local mode (before Qdrant Edge); migrate it first."""


@dataclass
class Record:
    """One stored point: ID (a UUID string), payload, and the vector or the search score when asked for."""

    id: str
    payload: dict[str, Any] = field(default_factory=dict)
    vector: list[float] | None = None
    score: float = 0.0


class Store(ABC):
    """One collection of vectors with JSON payloads. Subclasses: :class:`EdgeStore`, :class:`ServerStore`."""

    name: str
    embedded: bool

    @abstractmethod
    def exists(self) -> bool:
        """True once the collection has been created."""

    @abstractmethod
    def create(self, dim: int, metadata: dict[str, Any], *, distance: str = "dot", **options: Any) -> None:
        """Create the collection for ``dim``-d vectors ranked by ``distance`` (one of :data:`DISTANCES`),
        recording ``metadata`` (the model identity)."""

    @abstractmethod
    def describe(self) -> tuple[int | None, dict[str, Any]]:
        """The vector size and the recorded metadata (``None`` / ``{}`` where absent)."""

    @abstractmethod
    def distance(self) -> str:
        """How the collection ranks: ``"dot"`` or ``"cosine"`` (anything else: the other name, lower case)."""

    @abstractmethod
    def upsert(self, points: Sequence[Record]) -> None:
        """Insert or replace points (durable when this returns)."""

    @abstractmethod
    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False,
                 with_payload: bool = True) -> list[Record]:
        """The stored points among ``ids`` (missing IDs are left out)."""

    @abstractmethod
    def query(self, vector: Sequence[float], limit: int, *, filter: models.Filter | None = None,
              score_threshold: float | None = None, offset: int = 0) -> list[Record]:
        """Nearest points by the collection's similarity, best first, with payloads."""

    @abstractmethod
    def count(self, filter: models.Filter | None = None) -> int:
        """Exact number of points (matching ``filter``)."""

    @abstractmethod
    def scroll(self, filter: models.Filter | None = None, *, keys: Sequence[str] | None = None,
               with_vectors: bool = False, batch: int = 1024) -> Iterator[Record]:
        """Every point (matching ``filter``), with the payload ``keys`` asked for (``None``: all)."""

    @abstractmethod
    def facet(self, key: str, filter: models.Filter | None = None) -> list[Any]:
        """Distinct values of payload ``key`` (an indexed keyword field)."""

    @abstractmethod
    def delete(self, filter: models.Filter) -> None:
        """Delete the points matching ``filter``."""

    def delete_ids(self, ids: Sequence[str]) -> None:
        """Delete points by ID."""
        if ids:
            self.delete(models.Filter(must=[models.HasIdCondition(has_id=list(ids))]))

    def optimize(self) -> bool:
        """Build search indexes (HNSW) where the backend does it on request; True if anything changed."""
        return False

    @abstractmethod
    def close(self) -> None:
        """Release the backend (and an embedded folder's lock)."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- The server backend --------------------------------------------------------------------------------------------


class ServerStore(Store):
    """A collection on a Qdrant server (or any ``QdrantClient``), model identity in the collection metadata."""

    embedded = False

    def __init__(self, client: QdrantClient, name: str, *, owns_client: bool = True) -> None:
        self.client, self.name, self._owns = client, name, owns_client

    def exists(self) -> bool:
        return self.client.collection_exists(self.name)

    def create(self, dim: int, metadata: dict[str, Any], *, distance: str = "dot", shard_number: int | None = None,
               replication_factor: int | None = None, on_disk: bool = False, quantization: bool = False,
               **_: Any) -> None:
        quant = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8,
                                                                                  always_ram=True))
        self.client.create_collection(
            self.name, vectors_config=models.VectorParams(size=dim, distance=_server_distance(distance),
                                                          on_disk=on_disk or None),
            shard_number=shard_number, replication_factor=replication_factor,
            quantization_config=quant if quantization else None, metadata=metadata)
        for key in PAYLOAD_INDEXES:
            self.client.create_payload_index(self.name, key, models.PayloadSchemaType.KEYWORD)

    def describe(self) -> tuple[int | None, dict[str, Any]]:
        config = self.client.get_collection(self.name).config
        vectors = config.params.vectors
        size = vectors.size if isinstance(vectors, models.VectorParams) else None
        return size, dict(config.metadata or {})

    def distance(self) -> str:
        vectors = self.client.get_collection(self.name).config.params.vectors
        return str(vectors.distance.value).lower() if isinstance(vectors, models.VectorParams) else ""

    def upsert(self, points: Sequence[Record]) -> None:
        if points:
            self.client.upsert(self.name, wait=True, points=[
                models.PointStruct(id=p.id, vector=list(p.vector or []), payload=p.payload) for p in points])

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False,
                 with_payload: bool = True) -> list[Record]:
        records = self.client.retrieve(self.name, ids=list(ids), with_vectors=with_vectors,
                                       with_payload=with_payload)
        return [_from_client(r) for r in records]

    def query(self, vector: Sequence[float], limit: int, *, filter: models.Filter | None = None,
              score_threshold: float | None = None, offset: int = 0) -> list[Record]:
        response = self.client.query_points(self.name, query=list(vector), limit=limit, offset=offset or None,
                                            with_payload=True, query_filter=filter,
                                            score_threshold=score_threshold)
        return [_from_client(p) for p in response.points]

    def count(self, filter: models.Filter | None = None) -> int:
        return self.client.count(self.name, count_filter=filter, exact=True).count

    def scroll(self, filter: models.Filter | None = None, *, keys: Sequence[str] | None = None,
               with_vectors: bool = False, batch: int = 1024) -> Iterator[Record]:
        offset = None
        while True:
            records, offset = self.client.scroll(self.name, scroll_filter=filter, limit=batch, offset=offset,
                                                 with_vectors=with_vectors,
                                                 with_payload=list(keys) if keys is not None else True)
            yield from (_from_client(r) for r in records)
            if offset is None:
                return

    def facet(self, key: str, filter: models.Filter | None = None) -> list[Any]:
        hits = self.client.facet(self.name, key=key, facet_filter=filter, limit=max(self.count(filter), 1),
                                 exact=True).hits
        return [h.value for h in hits]

    def delete(self, filter: models.Filter) -> None:
        self.client.delete(self.name, points_selector=models.FilterSelector(filter=filter), wait=True)

    def close(self) -> None:
        if self._owns:
            self.client.close()


def _server_distance(distance: str) -> models.Distance:
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    return models.Distance.DOT if distance == "dot" else models.Distance.COSINE


def _from_client(point: Any) -> Record:
    vector = point.vector if isinstance(getattr(point, "vector", None), list) else None
    return Record(str(point.id), dict(point.payload or {}), vector, float(getattr(point, "score", 0.0) or 0.0))


# --- The embedded backend (Qdrant Edge) ----------------------------------------------------------------------------


def _require_edge() -> Any:
    if qe is None:
        raise ImportError("the embedded index needs qdrant-edge-py: pip install 'vc2l-retriever[qdrant]'")
    return qe


class EdgeFolder:
    """An embedded index folder: its lock, its format and its collections (one Edge shard each)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._temporary = os.fspath(path) == ":memory:"
        if self._temporary:  # ":memory:": a folder that lives as long as this object
            self.path = Path(tempfile.mkdtemp(prefix="vc2l-memory-index-"))
        if is_legacy_index(self.path):
            raise LegacyIndexError(
                f"{self.path} was written by qdrant-client's local mode (the embedded engine before Qdrant Edge); "
                f"migrate it once with: vc2l migrate-index {self.path}")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / ".lock", "a+")  # noqa: SIM115 (held open: the lock lives with the file)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise IndexInUseError(
                f"index {self.path} is in use by another process or store (an embedded index is opened by one at a "
                "time); close the other one, or run a Qdrant server and pass its url") from None
        marker = self.path / EDGE_MARKER
        if not marker.exists():
            marker.write_text(json.dumps({"format": "qdrant-edge", "version": 1}) + "\n")

    def collections(self) -> list[str]:
        """Names of the collections in the folder."""
        root = self.path / "collections"
        return sorted(p.name for p in root.iterdir() if (p / "vc2l.json").exists()) if root.is_dir() else []

    def store(self, name: str, *, owns_folder: bool = False) -> EdgeStore:
        """The collection ``name`` (created on :meth:`Store.create`); ``owns_folder``: closing it closes the folder."""
        if not name or name != os.path.basename(name) or name in (".", ".."):
            raise ValueError(f"invalid collection name {name!r}")
        return EdgeStore(self, name, owns_folder=owns_folder)

    def close(self) -> None:
        """Unlock (and remove a ``":memory:"`` folder)."""
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
        if self._temporary:
            shutil.rmtree(self.path, ignore_errors=True)


def is_legacy_index(path: str | os.PathLike[str]) -> bool:
    """True for a folder written by qdrant-client's local mode (``meta.json`` + ``collection/``, no Edge marker)."""
    path = Path(path)
    return (path / "meta.json").is_file() and (path / "collection").is_dir() and not (path / EDGE_MARKER).exists()


class EdgeStore(Store):
    """One collection of an embedded index folder: a Qdrant Edge shard. Thread-safe (the engine locks)."""

    embedded = True

    def __init__(self, folder: EdgeFolder, name: str, *, owns_folder: bool = False) -> None:
        self.folder, self.name, self._owns_folder = folder, name, owns_folder
        self.dir = folder.path / "collections" / name
        self.shard: Any = None
        if self.exists():
            self.shard = _require_edge().EdgeShard.load(os.fspath(self.dir / "shard"))

    def exists(self) -> bool:
        return (self.dir / "vc2l.json").is_file()

    def create(self, dim: int, metadata: dict[str, Any], *, distance: str = "dot", **_: Any) -> None:
        """Create the shard; server-only options (shards, replication, quantization) are ignored."""
        edge = _require_edge()
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        shard_dir = self.dir / "shard"
        if shard_dir.exists():  # a create interrupted before its record was written: start it again
            shutil.rmtree(shard_dir)
        metric = edge.Distance.Dot if distance == "dot" else edge.Distance.Cosine
        config = edge.EdgeConfig(vectors=edge.EdgeVectorParams(size=dim, distance=metric),
                                 wal_enabled=True)
        self.shard = edge.EdgeShard.create(os.fspath(shard_dir), config)
        for key in PAYLOAD_INDEXES:
            self.shard.update(edge.UpdateOperation.create_field_index(key, edge.PayloadSchemaType.Keyword))
        record = self.dir / "vc2l.json"
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"dim": dim, "distance": distance, "metadata": metadata}, indent=1) + "\n")
        os.replace(tmp, record)  # the collection exists once its record does

    def describe(self) -> tuple[int | None, dict[str, Any]]:
        record = json.loads((self.dir / "vc2l.json").read_text())
        return int(record["dim"]), dict(record.get("metadata") or {})

    def distance(self) -> str:
        # Collections made before the record kept it were all cosine.
        return str(json.loads((self.dir / "vc2l.json").read_text()).get("distance", "cosine"))

    def upsert(self, points: Sequence[Record]) -> None:
        if points:
            self.shard.update(qe.UpdateOperation.upsert_points(
                [qe.Point(p.id, list(p.vector or []), p.payload) for p in points]))

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False,
                 with_payload: bool = True) -> list[Record]:
        return [_from_edge(r) for r in self.shard.retrieve(list(ids), with_payload=with_payload,
                                                           with_vector=with_vectors)]

    def query(self, vector: Sequence[float], limit: int, *, filter: models.Filter | None = None,
              score_threshold: float | None = None, offset: int = 0) -> list[Record]:
        request = qe.QueryRequest(limit=limit, offset=offset or None, query=qe.Query.Nearest(list(vector)),
                                  with_payload=True, with_vector=False, filter=edge_filter(filter),
                                  score_threshold=score_threshold)
        return [_from_edge(p) for p in self.shard.query(request)]

    def count(self, filter: models.Filter | None = None) -> int:
        return int(self.shard.count(qe.CountRequest(exact=True, filter=edge_filter(filter))))

    def scroll(self, filter: models.Filter | None = None, *, keys: Sequence[str] | None = None,
               with_vectors: bool = False, batch: int = 1024) -> Iterator[Record]:
        payload = qe.PayloadSelector.Include(list(keys)) if keys is not None else True
        offset = None
        while True:
            records, offset = self.shard.scroll(qe.ScrollRequest(
                offset=offset, limit=batch, filter=edge_filter(filter), with_payload=payload,
                with_vector=with_vectors))
            yield from (_from_edge(r) for r in records)
            if offset is None:
                return

    def facet(self, key: str, filter: models.Filter | None = None) -> list[Any]:
        limit = max(self.count(filter), 1)
        return [h.value for h in self.shard.facet(qe.FacetRequest(key=key, limit=limit, exact=True,
                                                                  filter=edge_filter(filter))).hits]

    def delete(self, filter: models.Filter) -> None:
        self.shard.update(qe.UpdateOperation.delete_points_by_filter(edge_filter(filter)))

    def optimize(self) -> bool:
        """Merge segments and build HNSW (blocking); worth it past :data:`vc2l_retriever.index.OPTIMIZE_POINTS`."""
        return bool(self.shard.optimize())

    def close(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard = None
        if self._owns_folder:
            self.folder.close()


def _from_edge(point: Any) -> Record:
    vector = point.vector if isinstance(point.vector, list) else None
    return Record(str(point.id), dict(point.payload or {}), vector, float(getattr(point, "score", 0.0) or 0.0))


# --- Filters: qdrant-client's models -> Qdrant Edge's classes --------------------------------------------------------


def edge_filter(f: models.Filter | None) -> Any:
    """Translate a qdrant-client ``Filter`` for the Edge engine (the same semantics: both are Qdrant's)."""
    if f is None:
        return None

    def many(conditions: Any) -> list[Any] | None:
        if conditions is None:
            return None
        return [_edge_condition(c) for c in (conditions if isinstance(conditions, list) else [conditions])]

    min_should = None
    if f.min_should is not None:
        min_should = qe.MinShould(many(f.min_should.conditions), f.min_should.min_count)
    return qe.Filter(must=many(f.must), should=many(f.should), must_not=many(f.must_not), min_should=min_should)


def _edge_condition(c: Any) -> Any:
    if isinstance(c, models.Filter):
        return edge_filter(c)
    if isinstance(c, models.HasIdCondition):
        return qe.HasIdCondition({str(i) if not isinstance(i, int) else i for i in c.has_id})
    if isinstance(c, models.IsEmptyCondition):
        return qe.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, models.IsNullCondition):
        return qe.IsNullCondition(c.is_null.key)
    if isinstance(c, models.NestedCondition):
        return qe.NestedCondition(c.nested.key, edge_filter(c.nested.filter))
    if isinstance(c, models.FieldCondition):
        return qe.FieldCondition(key=c.key, match=_edge_match(c.match), range=_edge_range(c.range),
                                 values_count=_edge_values_count(c.values_count), is_empty=c.is_empty,
                                 is_null=c.is_null)
    raise ValueError(f"the embedded index cannot filter on {type(c).__name__}; use a Qdrant server for it")


def _edge_match(m: Any) -> Any:
    if m is None:
        return None
    if isinstance(m, models.MatchValue):
        return qe.MatchValue(m.value)
    if isinstance(m, models.MatchAny):
        return qe.MatchAny(list(m.any))
    if isinstance(m, models.MatchExcept):
        return qe.MatchExcept(list(m.except_))
    if isinstance(m, models.MatchText):
        return qe.MatchText(m.text)
    raise ValueError(f"the embedded index cannot match with {type(m).__name__}; use a Qdrant server for it")


def _edge_range(r: Any) -> Any:
    if r is None:
        return None
    if isinstance(r, models.Range):
        return qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
    raise ValueError(f"the embedded index cannot filter with {type(r).__name__}; use a Qdrant server for it")


def _edge_values_count(v: Any) -> Any:
    return None if v is None else qe.ValuesCount(lt=v.lt, gt=v.gt, lte=v.lte, gte=v.gte)


# --- Opening, migrating, copying ----------------------------------------------------------------------------------


def open_store(path: str | os.PathLike[str] | None = None, *, name: str, url: str | None = None,
               api_key: str | None = None, client: QdrantClient | None = None, **kwargs: Any) -> Store:
    """The collection ``name``: on a server (``url`` / ``client``) or in an embedded folder (``path``).

    Raises:
        IndexInUseError: the embedded folder is open elsewhere.
        LegacyIndexError: the folder was written by qdrant-client's local mode (migrate it first).
    """
    if client is not None:
        return ServerStore(client, name, owns_client=False)
    if url is not None:
        if path is not None:
            raise ValueError("give either path= (embedded) or url= (server), not both")
        return ServerStore(QdrantClient(url=url, api_key=api_key, **kwargs), name)
    if api_key is not None:
        raise ValueError("api_key= needs url=")
    folder = EdgeFolder(path if path is not None else "./vc2l_index")
    try:
        return folder.store(name, owns_folder=True)
    except BaseException:
        folder.close()
        raise


def copy_points(source: Store, target: Store, *, batch: int = 256) -> int:
    """Copy every point (ID, vector, payload) from ``source`` into ``target``; returns how many."""
    n, chunk = 0, []
    for record in source.scroll(with_vectors=True, batch=batch):
        chunk.append(record)
        if len(chunk) >= batch:
            target.upsert(chunk)
            n, chunk = n + len(chunk), []
    target.upsert(chunk)
    return n + len(chunk)


def copy_collection(source: Store, target: Store, *, batch: int = 256) -> int:
    """Copy a whole collection (its model record and every point) into ``target``, created if missing; returns
    the number of points. A ``target`` that exists must record the same vector size and model."""
    dim, metadata = source.describe()
    if dim is None:
        raise VC2LIndexError(f"collection {source.name!r} has named vectors; only VC2L collections can be copied")
    if not target.exists():
        target.create(dim, metadata, distance=source.distance())
    elif target.describe() != (dim, metadata) or target.distance() != source.distance():
        raise VC2LIndexError(f"collection {target.name!r} already exists with another model or vector size")
    n = copy_points(source, target, batch=batch)
    arrived = target.count()
    if arrived < n:
        raise VC2LIndexError(f"copy of {source.name!r} incomplete: {arrived} of {n} points arrived")
    return n


def migrate_legacy(path: str | os.PathLike[str]) -> dict[str, int]:
    """Convert a folder written by qdrant-client's local mode into an Edge index, in place; returns points per
    collection.

    The new index is built beside the old one, every collection's points are counted and compared (IDs, vectors,
    payloads) against the old, and only then are the folders swapped: the old one stays as
    ``<path>.local-mode-backup`` until you delete it. qdrant-client's local mode stores points as pickles, so
    reading it unpickles: migrate only folders you made yourself.
    """
    path = Path(path).absolute()
    if not is_legacy_index(path):
        raise VC2LIndexError(f"{path} is not an index written by qdrant-client's local mode")
    staging, backup = path.with_name(path.name + ".edge-migrating"), path.with_name(path.name + ".local-mode-backup")
    if backup.exists():
        raise VC2LIndexError(f"{backup} exists (an earlier migration's backup); move it away first")
    shutil.rmtree(staging, ignore_errors=True)  # a migration that died part-way starts again
    counts: dict[str, int] = {}
    client = QdrantClient(path=os.fspath(path))
    try:
        folder = EdgeFolder(staging)
        try:
            for collection in client.get_collections().collections:
                old, new = ServerStore(client, collection.name, owns_client=False), folder.store(collection.name)
                counts[collection.name] = copy_collection(old, new)
                _verify_copy(old, new)
                new.close()
        finally:
            folder.close()
    finally:
        client.close()
    os.replace(path, backup)
    os.replace(staging, path)
    return counts


def _verify_copy(old: Store, new: Store, batch: int = 512) -> None:
    """Every point of ``old`` is in ``new`` with the same payload and (to float32 precision) the same vector."""
    records = old.scroll(with_vectors=True, batch=batch)
    while chunk := list(islice(records, batch)):
        stored = {r.id: r for r in new.retrieve([r.id for r in chunk], with_vectors=True)}
        for r in chunk:
            twin = stored.get(r.id)
            if twin is None or twin.payload != r.payload or not _close(twin.vector, r.vector):
                raise VC2LIndexError(f"migration check failed on point {r.id} of {old.name!r}; nothing was changed")


def _close(a: list[float] | None, b: list[float] | None) -> bool:
    if a is None or b is None or len(a) != len(b):
        return False
    return bool(np.allclose(a, b, rtol=0, atol=1e-5))  # vectorised: a migration checks every point


def list_collections(path: str | os.PathLike[str] | None = None, *, url: str | None = None,
                     api_key: str | None = None) -> list[str]:
    """Collection names of an embedded folder or a server."""
    if url is not None:
        client = QdrantClient(url=url, api_key=api_key)
        try:
            return sorted(c.name for c in client.get_collections().collections)
        finally:
            client.close()
    folder = EdgeFolder(path if path is not None else "./vc2l_index")
    try:
        return folder.collections()
    finally:
        folder.close()
