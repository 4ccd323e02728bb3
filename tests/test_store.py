"""The store: Qdrant Edge embedded, qdrant-client for servers, one interface; migration from the old local mode.

Real engines throughout: Edge shards in temporary folders, and qdrant-client's local mode standing in for a server
(it takes the same calls a server does), since no Qdrant server runs here.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

import vc2l_retriever
from vc2l_retriever import Snippet
from vc2l_retriever.cli import main

pytest.importorskip("qdrant_edge")
from qdrant_client import QdrantClient, models  # noqa: E402

from vc2l_retriever import index as vindex  # noqa: E402
from vc2l_retriever.integrations.qdrant import VC2LQdrant  # noqa: E402
from vc2l_retriever.store import (  # noqa: E402
    IndexInUseError,
    LegacyIndexError,
    Record,
    ServerStore,
    copy_collection,
    is_legacy_index,
    open_store,
)


def records(n: int, dim: int = 8, seed: int = 0, sources: int = 3) -> list[Record]:
    rng = np.random.default_rng(seed)
    return [Record(str(uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}-{i}")),
                   {"page_content": f"text {i}", "metadata": {"source": f"/doc{i % sources}.txt", "page": i % 5,
                                                              "kind": "text" if i % 2 else "image"}},
                   rng.standard_normal(dim).astype(np.float32).tolist()) for i in range(n)]


@pytest.fixture(params=[("edge", "dot"), ("server", "dot"), ("edge", "cosine"), ("server", "cosine")],
                ids=lambda p: "-".join(p))
def store(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    """The same collection on both backends, ranked by either similarity."""
    backend, distance = request.param
    if backend == "edge":
        s = open_store(tmp_path / "idx", name="c")
    else:
        s = open_store(name="c", client=QdrantClient(location=":memory:"))
    s.create(8, {"vc2l": {"dim": 8}}, distance=distance)
    yield s
    s.close()


def test_both_backends_answer_queries_counts_facets_and_filters_alike(store) -> None:  # noqa: ANN001
    points = records(60)
    store.upsert(points)
    vectors = np.array([p.vector for p in points])
    cosine = store.distance() == "cosine"
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    query = np.array(points[7].vector)
    scores = unit @ (query / np.linalg.norm(query)) if cosine else vectors @ query
    order = np.argsort(-scores)
    hits = store.query(query.tolist(), 5)
    assert [h.id for h in hits] == [points[i].id for i in order[:5]]
    np.testing.assert_allclose([h.score for h in hits], scores[order[:5]], rtol=1e-4)
    assert hits[0].payload == points[7].payload
    doc1 = models.Filter(must=[models.FieldCondition(key="metadata.source",
                                                     match=models.MatchValue(value="/doc1.txt"))])
    assert store.count() == 60 and store.count(doc1) == 20
    assert sorted(store.facet("metadata.source")) == ["/doc0.txt", "/doc1.txt", "/doc2.txt"]
    images_of_doc1 = models.Filter(must=[doc1, models.FieldCondition(key="metadata.kind",
                                                                     match=models.MatchAny(any=["image"]))],
                                   must_not=[models.HasIdCondition(has_id=[points[4].id])])
    expected = {p.id for i, p in enumerate(points) if i % 3 == 1 and i % 2 == 0 and i != 4}
    assert {r.id for r in store.scroll(images_of_doc1, keys=["metadata.source"])} == expected
    pages = models.Filter(must=[models.FieldCondition(key="metadata.page", range=models.Range(gte=3))])
    assert store.count(pages) == sum(1 for i in range(60) if i % 5 >= 3)
    assert all(h.payload["metadata"]["source"] == "/doc1.txt" for h in store.query(query.tolist(), 10, filter=doc1))
    store.delete(doc1)
    assert store.count() == 40 and store.retrieve([points[1].id]) == []
    (back,) = store.retrieve([points[0].id], with_vectors=True)
    original = np.array(points[0].vector)
    stored = original / np.linalg.norm(original) if cosine else original  # cosine stores unit vectors
    np.testing.assert_allclose(back.vector, stored, atol=1e-6)


def test_an_edge_folder_is_locked_to_one_opener_and_reopens_with_its_points(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    with open_store(path, name="c") as s:
        s.create(8, {"vc2l": {"dim": 8}})
        s.upsert(records(10))
        with pytest.raises(IndexInUseError, match="in use"):
            open_store(path, name="other")
    with open_store(path, name="c") as s:
        assert s.exists() and s.count() == 10 and s.describe() == (8, {"vc2l": {"dim": 8}})
    with pytest.raises(ValueError, match="invalid collection name"):
        open_store(path, name="../escape")


def test_searches_racing_upserts_on_one_edge_shard_see_exact_counts_and_no_errors(tmp_path: Path) -> None:
    writers, per_writer, batch = 3, 400, 20
    with open_store(tmp_path / "idx", name="c") as s:
        s.create(8, {})
        errors: list[BaseException] = []
        seen: list[int] = []
        done = threading.Event()

        def write(k: int) -> None:
            try:
                points = records(per_writer, seed=k + 1)
                for i in range(0, per_writer, batch):
                    s.upsert(points[i:i + batch])
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        def read() -> None:
            try:
                while not done.is_set():
                    n = s.count()
                    assert n % batch == 0, n  # an upsert is all-or-nothing for readers
                    seen.append(n)
                    assert min(n, 10) <= len(s.query([1.0] * 8, 10)) <= 10  # points are only ever added
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in threads + readers:
            t.start()
        for t in threads:
            t.join(timeout=120)
        done.set()
        for t in readers:
            t.join(timeout=120)
        assert errors == [] and len(seen) > 0
        assert s.count() == writers * per_writer and len({r.id for r in s.scroll()}) == writers * per_writer


def old_local_mode_index(path: Path, model: vc2l_retriever.VC2LSentenceTransformer) -> dict[str, list[float]]:
    """An index as the previous release wrote it: qdrant-client local mode, model record in collection metadata."""
    identity = vindex.model_identity(model)
    client = QdrantClient(path=str(path))
    client.create_collection("vc2l", vectors_config=models.VectorParams(size=identity.dim,
                                                                         distance=models.Distance.COSINE),
                             metadata={"vc2l": identity.to_dict()})
    snippets = [Snippet(text=f"fact number {i}", source="/facts.txt", order=i) for i in range(12)]
    vectors = model.encode(snippets, convert_to_numpy=True)
    points = [models.PointStruct(id=vindex.point_id(s), vector=v.tolist(),
                                 payload=vindex.make_payload(s, content=vindex.content_hash(s)))
              for s, v in zip(snippets, vectors, strict=True)]
    client.upsert("vc2l", points=points)
    client.close()
    return {str(p.id): p.vector for p in points}


def test_an_old_local_mode_index_is_refused_with_the_command_then_migrated_without_loss(
        micro_model: vc2l_retriever.VC2LSentenceTransformer, micro_model_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "vc2l_index"
    old = old_local_mode_index(path, micro_model)
    assert is_legacy_index(path)
    with pytest.raises(LegacyIndexError, match=f"vc2l migrate-index {path}"):
        VC2LQdrant(micro_model, path=path)
    assert main(["search", "fact number 3", "--index", str(path), "--model", str(micro_model_dir)]) == 1
    assert f"vc2l migrate-index {path}" in capsys.readouterr().err

    assert main(["migrate-index", str(path)]) == 0
    assert "migrated collection 'vc2l': 12 points" in capsys.readouterr().out
    backup = tmp_path / "vc2l_index.local-mode-backup"
    assert is_legacy_index(backup) and not is_legacy_index(path)  # the old folder is kept
    with VC2LQdrant(micro_model, path=path) as s:
        assert s.count() == 12
        stored = {r.id: r.vector for r in s.store.scroll(with_vectors=True)}
        (hit,) = s.search("fact number 3", limit=1)
    assert set(stored) == set(old)
    for point_id, vector in stored.items():
        np.testing.assert_allclose(vector, old[point_id], atol=1e-6)
    assert hit.text == "fact number 3" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert main(["migrate-index", str(path)]) == 1  # nothing left to migrate


def test_export_copies_an_embedded_collection_with_its_model_record_to_a_server(
        micro_model: vc2l_retriever.VC2LSentenceTransformer, tmp_path: Path) -> None:
    with VC2LQdrant(micro_model, path=tmp_path / "idx") as s:
        s.index([Snippet(text=f"fact number {i}", source=f"/f{i % 2}.txt", order=i) for i in range(9)])
        server = ServerStore(QdrantClient(location=":memory:"), "vc2l")  # what `vc2l export-index --url` opens
        assert copy_collection(s.store, server) == 9
        assert server.describe() == s.store.describe() and server.count() == 9
    with VC2LQdrant(micro_model, client=server.client) as remote:  # the model identity check passes there
        (hit,) = remote.search("fact number 4", limit=1)
        assert hit.text == "fact number 4" and remote.count(source="/f0.txt") == 5
    other = vc2l_retriever.create("micro", seed=1, device="cpu")
    with pytest.raises(vindex.IndexMismatchError):
        VC2LQdrant(other, client=server.client)
