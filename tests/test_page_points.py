"""A scanned page in the index: stored as its points (``encode_points``), found once, kept, reused and retired whole.

A page is read as several canvases on a ``grid`` model; the index keeps one point a canvas in a dot-product
collection (``index.py``). These tests use a real reader model (``reader-micro``, two rows a page canvas so that a
dozen lines make several canvases), real Qdrant engines (Edge, and qdrant-client's local mode standing in for a
server), real PDFs and the real LangChain and LlamaIndex stores.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import vc2l_retriever
from vc2l_retriever import Snippet

pytest.importorskip("qdrant_edge")
from qdrant_client import QdrantClient  # noqa: E402

from vc2l_retriever import index as vindex  # noqa: E402
from vc2l_retriever.store import open_store  # noqa: E402

MONO = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"))
pytestmark = pytest.mark.skipif(not MONO, reason="DejaVu Sans Mono (Debian fonts-dejavu-core) is not installed")

LINES = ["Installing the package", "Run the configure script first,", "then make and make install.",
         "Tide tables for the northern coast", "Cleaning solar panels twice a year", "Feeding the goats at dawn"]


def page_image(lines: list[str], size: int = 24, width: int = 1000) -> Image.Image:
    """A white page with ``lines`` drawn in black, one every 2 line heights."""
    font = ImageFont.truetype(MONO[0], size)
    image = Image.new("RGB", (width, 80 + 2 * size * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for k, line in enumerate(lines):
        draw.text((30, 40 + 2 * size * k), line, fill="black", font=font)
    return image


def scanned_pdf(path: Path, lines: list[str]) -> Path:
    """A one-page PDF whose text exists only as pixels (no text layer)."""
    import fpdf

    page_image(lines).save(path.with_suffix(".png"))
    pdf = fpdf.FPDF()
    pdf.add_page()
    pdf.image(str(path.with_suffix(".png")), x=0, y=0, w=210)
    pdf.output(str(path))
    return path


@pytest.fixture(scope="module")
def reader() -> vc2l_retriever.VC2LSentenceTransformer:
    """A reader whose page canvases hold two rows: a page of a few lines is several points."""
    return vc2l_retriever.create("reader-micro", seed=0, device="cpu", render={"max_rows": 8, "page_rows": 2})


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, reader, tmp_path: Path):  # noqa: ANN001, ANN201
    s = (open_store(tmp_path / "idx", name="c") if request.param == "edge"
         else open_store(name="c", client=QdrantClient(location=":memory:")))
    vindex.ensure_collection(s, vindex.model_identity(reader))
    yield s
    s.close()


def page_snippet(lines: list[str] = LINES, source: str = "/docs/scan.pdf") -> Snippet:
    return Snippet(images=[page_image(lines)], kind="page", source=source, page=1, order=0)


def test_a_scanned_page_is_stored_as_its_points_and_found_once_at_its_best_point(reader, store) -> None:  # noqa: ANN001
    page = page_snippet()
    texts = [Snippet(text=t, source="/docs/notes.txt", order=i) for i, t in enumerate(["goats", "tides", "solar"])]
    report = vindex.index_snippets(store, reader, [page, *texts])
    [points] = reader.encode_points([page])
    assert store.distance() == "dot" and report.snippets == 4 and len(points) >= 3
    info = vindex.collection_info(store)
    assert info["points"] == len(points) + 3 and info["snippets"] == 4 and info["distance"] == "dot"

    first = vindex.point_id(page)
    ids = [first] + [vindex.part_id(first, i) for i in range(1, len(points))]
    stored = {r.id: r for r in store.retrieve(ids, with_vectors=True)}
    np.testing.assert_allclose([stored[i].vector for i in ids], points, atol=1e-5)  # the index's page = encode_points
    assert stored[first].payload["thumbnail"] and stored[first].payload["vc2l"]["parts"] == len(points)
    assert all("thumbnail" not in stored[i].payload and stored[i].payload["vc2l"]["of"] == first for i in ids[1:])
    assert all(stored[i].payload["metadata"]["source"] == "/docs/scan.pdf" for i in ids)

    for k in range(len(points)):  # whichever canvas a query is nearest, the page comes once, as its first point
        query = points[k] / np.linalg.norm(points[k])
        hits = vindex.search(store, reader, query, limit=4)
        assert [h.id for h in hits].count(first) == 1 and len(hits) == 4
        page_hit = next(h for h in hits if h.id == first)
        assert page_hit.score == pytest.approx(float((points @ query).max()), abs=1e-4)
        assert page_hit.payload["thumbnail"] and page_hit.snippet.kind == "page" and page_hit.snippet.images
    groups = vindex.search_groups(store, reader, points[0], limit=2, group_size=3)
    assert {g.key: [h.id for h in g.hits].count(first) for g in groups}["/docs/scan.pdf"] == 1


def test_indexing_a_page_again_reuses_every_point_and_a_lost_point_is_encoded_again(reader, store) -> None:  # noqa: ANN001
    page = page_snippet()
    vindex.index_snippets(store, reader, [page])
    n = store.count()
    again = vindex.index_snippets(store, reader, [page])
    assert (again.encoded, again.reused, store.count()) == (0, 1, n)
    store.delete_ids([vindex.part_id(vindex.point_id(page), 1)])  # a write cut short
    repaired = vindex.index_snippets(store, reader, [page])
    assert (repaired.encoded, store.count()) == (1, n)


def test_a_scanned_pdf_is_skipped_while_unchanged_and_its_old_page_retired_whole_when_it_changes(
        reader, tmp_path: Path) -> None:  # noqa: ANN001
    docs = tmp_path / "docs"
    docs.mkdir()
    pdf = scanned_pdf(docs / "scan.pdf", LINES)
    (docs / "scan.png").unlink()
    with open_store(tmp_path / "idx", name="c") as store:
        vindex.ensure_collection(store, vindex.model_identity(reader))
        first = vindex.index_paths(store, reader, [docs])
        n = store.count()
        assert first.snippets == 1 and n > 1
        assert vindex.index_paths(store, reader, [docs]).unchanged == [str(pdf)]  # points counted as one page
        scanned_pdf(pdf, LINES[:2])
        (docs / "scan.png").unlink()
        changed = vindex.index_paths(store, reader, [docs])
        assert changed.snippets == 1 and changed.replaced == n
        left = store.count()
        assert vindex.collection_info(store)["snippets"] == 1 and 1 < left < n
        assert vindex.delete(store, str(pdf)) == left and store.count() == 0


def test_a_cosine_collection_made_before_keeps_one_vector_a_page(reader, tmp_path: Path) -> None:  # noqa: ANN001
    import json

    page = page_snippet()
    with open_store(tmp_path / "idx", name="c") as store:
        vindex.ensure_collection(store, vindex.model_identity(reader))
        record = store.dir / "vc2l.json"  # written before the record kept its similarity: read as cosine
        old = json.loads(record.read_text())
        assert old.pop("distance") == "dot"
        record.write_text(json.dumps(old))
        assert store.distance() == "cosine"
        vindex.index_snippets(store, reader, [page])
        [stored] = store.retrieve([vindex.point_id(page)], with_vectors=True)
        assert store.count() == 1
        np.testing.assert_allclose(stored.vector, reader.encode([page])[0], atol=1e-5)


def test_langchain_and_llamaindex_stores_over_the_index_see_a_page_once_and_delete_it_whole(
        reader, tmp_path: Path) -> None:  # noqa: ANN001
    pytest.importorskip("langchain_qdrant")
    pytest.importorskip("llama_index.vector_stores.qdrant")
    from llama_index.core.vector_stores.types import VectorStoreQuery

    from vc2l_retriever.integrations.langchain import VC2LEmbeddings, VC2LVectorStore
    from vc2l_retriever.integrations.llamaindex import VC2LEmbedding
    from vc2l_retriever.integrations.llamaindex import VC2LVectorStore as LlamaStore

    page = page_snippet()
    first = vindex.point_id(page)
    [points] = reader.encode_points([page])
    query = (points[-1] / np.linalg.norm(points[-1])).tolist()
    with open_store(tmp_path / "idx", name="c") as store:
        lc = VC2LVectorStore(VC2LEmbeddings(reader), store=store)
        vindex.index_snippets(store, reader, [page, Snippet(text="goats", source="/docs/notes.txt")])
        docs = lc.similarity_search_by_vector(query, k=2)
        assert [d.id for d in docs].count(first) == 1 and len(docs) == 2
        assert len(lc.max_marginal_relevance_search_by_vector(query, k=2, fetch_k=5)) == 2

        llama = LlamaStore(store, embed_model=VC2LEmbedding(reader))
        result = llama.query(VectorStoreQuery(query_embedding=query, similarity_top_k=2))
        assert result.ids.count(first) == 1 and len(result.ids) == 2
        assert sorted(n.node_id for n in llama.get_nodes()) == sorted([first, docs[1].id if docs[0].id == first
                                                                        else docs[0].id])
        result = llama.query(VectorStoreQuery(query_embedding=query, similarity_top_k=5, node_ids=[first]))
        assert result.ids == [first] and result.similarities[0] == pytest.approx(float((points @ query).max()),
                                                                                  abs=1e-4)
        lc.delete([first])
        assert store.count() == 1  # the page's extra points went with it

        # Written through LangChain, the same page gets the same points as from the indexer, under the caller's ID.
        path = tmp_path / "scan.png"
        page.images[0].save(path)
        from langchain_core.documents import Document

        doc = Document(page_content="", metadata={"image_paths": [str(path)], "kind": "page"})
        [doc_id] = lc.add_documents([doc], ids=["scan-1"])
        assert store.count() == 1 + len(points)
        [found] = [d for d in lc.similarity_search_by_vector(query, k=2) if d.id == doc_id]
        assert lc.similarity_search_with_score_by_vector(query, k=1)[0][1] == pytest.approx(
            float((points @ query).max()), abs=1e-4)
        lc.add_documents([Document(page_content="now a short text")], ids=["scan-1"])  # the same ID, one point
        assert store.count() == 2
