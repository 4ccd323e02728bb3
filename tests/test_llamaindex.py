"""LlamaIndex adapter: the encoder inside real VectorStoreIndex / MultiModalVectorStoreIndex over a real local Qdrant.

The micro model has random weights, so retrieval tests use exact-text queries and distinct images: the same input
gives the same embedding (score 1.0).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("llama_index.core")
pytest.importorskip("llama_index.vector_stores.qdrant")
pytest.importorskip("fpdf")

from fpdf import FPDF  # noqa: E402
from llama_index.core import Settings, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler  # noqa: E402
from llama_index.core.indices import MultiModalVectorStoreIndex  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.schema import Document, ImageDocument, ImageNode, MetadataMode, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import VectorStoreQuery  # noqa: E402
from llama_index.vector_stores.qdrant import QdrantVectorStore  # noqa: E402
from qdrant_client import QdrantClient  # noqa: E402

import vc2l_retriever  # noqa: E402
from vc2l_retriever.index import IndexMismatchError, open_index  # noqa: E402
from vc2l_retriever.integrations.llamaindex import (  # noqa: E402
    VC2LEmbedding,
    VC2LQdrantVectorStore,
    VC2LReader,
    llamaindex_payload_keys,
    vector_store,
)

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["Compost needs air, water and a mix of green and brown waste.",
         "Turn the heap every two weeks to keep it warm.",
         "Leaves turn red when chlorophyll breaks down in the cold."]


@pytest.fixture(scope="module")
def embed_model(micro_model: vc2l_retriever.VC2LSentenceTransformer) -> VC2LEmbedding:
    return VC2LEmbedding(micro_model, embed_batch_size=2)


@pytest.fixture()
def images(tmp_path: Path) -> list[Path]:
    """Three clearly different pictures."""
    paths = [tmp_path / "green.png", tmp_path / "stripes.png", tmp_path / "checks.png"]
    Image.new("RGB", (64, 48), (30, 160, 40)).save(paths[0])
    Image.fromarray((np.indices((60, 60)).sum(0) // 5 % 2 * 255).astype(np.uint8)).convert("RGB").save(paths[1])
    Image.fromarray(((np.indices((64, 64)) // 8).sum(0) % 2 * 200).astype(np.uint8)).convert("RGB").save(paths[2])
    return paths


@pytest.fixture()
def docs(tmp_path: Path, images: list[Path]) -> Path:
    """A two-page PDF (page 2 with an embedded figure), an HTML page with a picture, and a photo."""
    folder = tmp_path / "docs"
    (folder / "img").mkdir(parents=True)
    Image.open(images[0]).save(folder / "img" / "leaf.png")
    Image.open(images[1]).save(folder / "stripes.png")
    pdf = FPDF()
    for text, image in [(TEXTS[0], None), (TEXTS[1], images[2])]:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 8, text)
        if image is not None:
            pdf.image(str(image), w=40)
    pdf.output(str(folder / "compost.pdf"))
    (folder / "leaves.html").write_text(f"<html><body><h1>Autumn</h1><p>{TEXTS[2]}</p><img src='img/leaf.png'>"
                                        "</body></html>", encoding="utf-8")
    return folder


# --- the embedding class -----------------------------------------------------------------------------------------


def test_importing_without_llama_index_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_index.core", None)
    monkeypatch.delitem(sys.modules, "vc2l_retriever.integrations.llamaindex")
    with pytest.raises(ImportError, match=r"pip install 'vc2l-retriever\[llamaindex\]'"):
        importlib.import_module("vc2l_retriever.integrations.llamaindex")


def test_text_query_and_image_embeddings_equal_model_encode_in_batches_with_callbacks(
        micro_model: vc2l_retriever.VC2LSentenceTransformer, images: list[Path]) -> None:
    debug = LlamaDebugHandler()
    embed_model = VC2LEmbedding(micro_model, embed_batch_size=2, callback_manager=CallbackManager([debug]))
    texts = [*TEXTS, "two", "three"]
    vectors = embed_model.get_text_embedding_batch(texts)
    np.testing.assert_allclose(vectors, micro_model.encode(texts), atol=1e-5)
    assert len(debug.get_event_pairs(CBEventType.EMBEDDING)) == 3  # 5 texts in batches of 2
    assert all(type(v) is float for v in vectors[0])
    np.testing.assert_allclose(embed_model.get_query_embedding(TEXTS[0]), vectors[0], atol=1e-6)
    np.testing.assert_allclose(embed_model.get_image_embedding_batch([str(p) for p in images]),
                               micro_model.encode(images), atol=1e-5)
    np.testing.assert_allclose(embed_model.get_image_embedding(str(images[1])), micro_model.encode([images[1]])[0],
                               atol=1e-5)


def test_async_methods_return_the_same_vectors_as_sync(embed_model: VC2LEmbedding, images: list[Path]) -> None:
    paths = [str(p) for p in images]

    async def run() -> list:
        return await asyncio.gather(embed_model.aget_query_embedding(TEXTS[1]),
                                    embed_model.aget_text_embedding(TEXTS[2]),
                                    embed_model.aget_text_embedding_batch(TEXTS),
                                    embed_model.aget_image_embedding(paths[0]),
                                    embed_model.aget_image_embedding_batch(paths))

    query, text, batch, image, image_batch = asyncio.run(run())
    np.testing.assert_allclose(query, embed_model.get_query_embedding(TEXTS[1]), atol=1e-6)
    np.testing.assert_allclose(text, embed_model.get_text_embedding(TEXTS[2]), atol=1e-6)
    np.testing.assert_allclose(batch, embed_model.get_text_embedding_batch(TEXTS), atol=1e-6)
    np.testing.assert_allclose(image, embed_model.get_image_embedding(paths[0]), atol=1e-6)
    np.testing.assert_allclose(image_batch, embed_model.get_image_embedding_batch(paths), atol=1e-6)


def test_as_a_transformation_a_node_with_image_paths_becomes_one_text_and_image_vector(
        embed_model: VC2LEmbedding, micro_model: vc2l_retriever.VC2LSentenceTransformer, images: list[Path]) -> None:
    nodes = [TextNode(text="a green leaf", metadata={"image_paths": [str(images[0])]},
                      excluded_embed_metadata_keys=["image_paths"]),
             ImageNode(image_path=str(images[1]), metadata={"source": "x"}),  # no own text: the image alone
             TextNode(text="plain text")]
    asyncio.run(embed_model.acall([n.model_copy() for n in nodes]))  # the async path runs too
    embed_model(nodes)
    expected = micro_model.encode([{"text": "a green leaf", "image": [images[0]]}, images[1], "plain text"])
    np.testing.assert_allclose([n.embedding for n in nodes], expected, atol=1e-5)


# --- reading files -------------------------------------------------------------------------------------------------


def test_reader_yields_documents_and_image_documents_with_paths_not_base64(docs: Path, tmp_path: Path) -> None:
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    reader = VC2LReader(image_dir=tmp_path / "images")
    documents = reader.load_data([docs])
    assert [Path(e.source).name for e in reader.errors] == ["broken.pdf"]
    named = {(Path(d.metadata["source"]).name, d.metadata["page"]): d for d in documents}
    page2 = named[("compost.pdf", 2)]
    assert type(page2) is Document and TEXTS[1] in page2.text
    assert Path(page2.metadata["image_paths"][0]).parent == tmp_path / "images"  # the PDF figure, saved
    photo = named[("stripes.png", None)]
    assert isinstance(photo, ImageDocument) and photo.image_path == str(docs / "stripes.png") and photo.image is None
    assert page2.get_content(metadata_mode=MetadataMode.EMBED) == page2.text  # metadata is never drawn on the canvas
    assert "source: " in page2.get_content(metadata_mode=MetadataMode.LLM)  # but LLMs see where it came from
    assert [d.id_ for d in VC2LReader(image_dir=tmp_path / "images").load_data([docs])] == [d.id_ for d in documents]


# --- indexes over a real local Qdrant -------------------------------------------------------------------------------


def test_vector_store_index_over_qdrant_returns_the_exact_text_first(embed_model: VC2LEmbedding,
                                                                     tmp_path: Path) -> None:
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    store = QdrantVectorStore(collection_name="notes", client=client, index_doc_id=False)  # local: no indexes
    nodes = [TextNode(text=t, id_=f"00000000-0000-0000-0000-00000000000{i}") for i, t in enumerate(TEXTS)]
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                             embed_model=embed_model)
    for i, text in enumerate(TEXTS):
        best = index.as_retriever(similarity_top_k=2).retrieve(text)[0]
        assert best.node.node_id == nodes[i].node_id and best.score == pytest.approx(1.0, abs=1e-4)
    client.close()


def test_multimodal_index_retrieves_text_and_images_and_image_to_image(
        embed_model: VC2LEmbedding, docs: Path, tmp_path: Path) -> None:
    documents = VC2LReader(image_dir=tmp_path / "images").load_data([docs])
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    storage = StorageContext.from_defaults(vector_store=vector_store(client, "text", embed_model),
                                           image_store=vector_store(client, "images", embed_model))
    index = MultiModalVectorStoreIndex.from_documents(
        documents, storage_context=storage, embed_model=embed_model, image_embed_model=embed_model,
        transformations=[SentenceSplitter(), embed_model])
    # text: PDF page 1, page 2 + its figure (one vector), the HTML paragraph + picture; images: the two image files
    assert (client.count("text").count, client.count("images").count) == (3, 2)
    retriever = index.as_retriever(similarity_top_k=2, image_similarity_top_k=2)
    hits = retriever.retrieve(TEXTS[0])
    text_hits = [h for h in hits if not isinstance(h.node, ImageNode)]
    image_hits = [h for h in hits if isinstance(h.node, ImageNode)]
    assert TEXTS[0] in text_hits[0].node.get_content() and text_hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert sorted(h.node.image_path for h in image_hits) == [str(docs / "img" / "leaf.png"), str(docs / "stripes.png")]
    best = retriever.image_to_image_retrieve(str(docs / "stripes.png"))[0]
    assert best.node.image_path == str(docs / "stripes.png") and best.score == pytest.approx(1.0, abs=1e-4)
    page2 = next(d for d in documents if d.metadata["page"] == 2)  # stored as ONE text+figure vector
    interleaved = embed_model.encode([{"text": page2.text, "image": [Path(p) for p in page2.metadata["image_paths"]]}])
    found = storage.vector_stores["default"].query(VectorStoreQuery(query_embedding=interleaved[0],
                                                                    similarity_top_k=1))
    assert found.nodes[0].metadata["page"] == 2 and found.similarities[0] == pytest.approx(1.0, abs=1e-4)
    client.close()


def test_a_collection_written_by_the_project_indexer_is_readable_by_llamaindex(
        embed_model: VC2LEmbedding, docs: Path, tmp_path: Path) -> None:
    qdrant = pytest.importorskip("vc2l_retriever.integrations.qdrant")
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    with qdrant.VC2LQdrant(embed_model.model, client=client, collection_name="vc2l") as indexer:
        indexer.index([docs])
    points = client.count("vc2l").count

    ours = VectorStoreIndex.from_vector_store(VC2LQdrantVectorStore(collection_name="vc2l", client=client),
                                              embed_model=embed_model)
    best = ours.as_retriever(similarity_top_k=1).retrieve(TEXTS[0])[0]
    assert best.node.text == TEXTS[0] and Path(best.node.metadata["source"]).name == "compost.pdf"
    assert best.node.metadata["page"] == 1 and "thumbnail" not in best.node.metadata
    stripes = embed_model.get_image_embedding(str(docs / "stripes.png"))
    found = ours.vector_store.query(VectorStoreQuery(query_embedding=stripes, similarity_top_k=1))
    assert isinstance(found.nodes[0], ImageNode) and found.nodes[0].image_path == str(docs / "stripes.png")

    stock = QdrantVectorStore(collection_name="vc2l", client=client, text_key="page_content")
    best = VectorStoreIndex.from_vector_store(stock, embed_model=embed_model).as_retriever(
        similarity_top_k=1).retrieve(TEXTS[0])[0]
    assert best.node.text == TEXTS[0]  # readable as is, metadata nested under "metadata"
    assert best.node.metadata["metadata"]["page"] == 1

    records, _ = client.scroll("vc2l", limit=points, with_payload=True)
    for record in records:  # the proposed extra payload keys make the stock store read it at full fidelity
        client.set_payload("vc2l", payload=llamaindex_payload_keys(record.payload, str(record.id)), points=[record.id])
    stock = QdrantVectorStore(collection_name="vc2l", client=client)
    found = stock.query(VectorStoreQuery(query_embedding=stripes, similarity_top_k=1))
    assert isinstance(found.nodes[0], ImageNode) and found.nodes[0].image_path == str(docs / "stripes.png")
    source = str(docs / "compost.pdf")
    pdf_points = indexer.count(source)
    stock.delete(ref_doc_id=source)  # ref_doc_id is the source file
    assert pdf_points >= 2 and client.count("vc2l").count == points - pdf_points and indexer.count(source) == 0

    other = VC2LEmbedding(vc2l_retriever.create("micro", seed=1, device="cpu"))
    with pytest.raises(IndexMismatchError):
        vector_store(client, "vc2l", other)  # vectors of another model are never mixed in
    client.close()


def test_the_llamaindex_rag_example_answers_text_image_and_plain_queries(
        micro_model_dir: Path, docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_llm", "_embed_model"):  # the example sets LlamaIndex's global Settings; undo that afterwards
        monkeypatch.setattr(Settings, name, getattr(Settings, name))
    spec = importlib.util.spec_from_file_location("llamaindex_rag", REPO / "examples" / "llamaindex_rag.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = ["--model", str(micro_model_dir), "--docs", str(docs), "--index", str(tmp_path / "index"),
            "--query", TEXTS[0], "--image", str(docs / "stripes.png"), "-k", "2"]
    example.main(argv)
    example.main(argv)  # a second run overwrites: stable node IDs
    counts = []
    for name in ("text", "images", "all"):  # the example writes the project's embedded index (Qdrant Edge)
        with open_index(tmp_path / "index", collection=name) as store:
            counts.append(store.count())
    assert counts == [3, 2, 5]
    out = capsys.readouterr().out.split("LLM is explicitly disabled")[-1]
    text, images, image_query, plain = out.split("\n[1] ")[1:5]
    assert text.startswith("compost.pdf p.1") and images.startswith("stripes.png")
    assert image_query.startswith("stripes.png (image, score 1.000)") and plain.startswith("compost.pdf p.1")
