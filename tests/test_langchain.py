"""LangChain adapter: LangChain's own standard embedding suites, plus real RAG over a real local Qdrant.

The micro model has random weights, so retrieval tests rely on what holds for any model: the same input gives the
same embedding (score 1.0), and distinct inputs give distinct embeddings.
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

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_qdrant")
pytest.importorskip("fpdf")

from fpdf import FPDF  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_qdrant import QdrantVectorStore  # noqa: E402
from langchain_tests.integration_tests import EmbeddingsIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402
from qdrant_client import QdrantClient, models  # noqa: E402

import vc2l_retriever  # noqa: E402
from vc2l_retriever.index import IndexMismatchError  # noqa: E402
from vc2l_retriever.integrations.langchain import (  # noqa: E402
    VC2LDocumentLoader,
    VC2LEmbeddings,
    add_images,
    add_snippets,
    vector_store,
)

REPO = Path(__file__).resolve().parents[1]
ASYNC_MARKS = [
    # The standard suite's async tests are plain ``async def``; this repo runs pytest-asyncio in strict mode.
    pytest.mark.asyncio,
    pytest.mark.filterwarnings("ignore:The test <Function .*is marked with '@pytest.mark.asyncio'"),
]


class _OnSavedMicroModel:
    """What both standard suites need: our class, built from the micro model saved to a temporary folder."""

    model_dir: Path
    pytestmark = ASYNC_MARKS

    @pytest.fixture(autouse=True)
    def _saved_model(self, micro_model_dir: Path) -> None:
        type(self).model_dir = micro_model_dir

    @property
    def embeddings_class(self) -> type[VC2LEmbeddings]:
        return VC2LEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_name_or_path": str(self.model_dir)}


class TestVC2LEmbeddingsStandardUnit(_OnSavedMicroModel, EmbeddingsUnitTests):
    """LangChain's standard unit suite, unchanged."""


class TestVC2LEmbeddingsStandardIntegration(_OnSavedMicroModel, EmbeddingsIntegrationTests):
    """LangChain's standard integration suite, unchanged; it runs offline on the saved micro model."""


# --- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embeddings(micro_model_dir: Path) -> VC2LEmbeddings:
    return VC2LEmbeddings(str(micro_model_dir), batch_size=4)


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    """A PDF (page 1 text, page 2 text + an embedded figure), an HTML page with a picture, and a photo."""
    folder = tmp_path / "docs"
    (folder / "img").mkdir(parents=True)
    Image.new("RGB", (64, 48), (30, 160, 40)).save(folder / "img" / "leaf.png")
    Image.fromarray((np.indices((60, 60)).sum(0) // 5 % 2 * 255).astype(np.uint8)).convert("RGB").save(
        folder / "stripes.png")
    figure = tmp_path / "figure.png"
    Image.new("RGB", (90, 70), (20, 40, 210)).save(figure)
    pdf = FPDF()
    for text, image in [("Compost needs air, water and a mix of green and brown waste.", None),
                        ("Turn the heap every two weeks to keep it warm.", figure)]:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 8, text)
        if image is not None:
            pdf.image(str(image), w=40)
    pdf.output(str(folder / "compost.pdf"))
    (folder / "leaves.html").write_text(
        "<html><body><h1>Autumn leaves</h1><p>Leaves turn red when chlorophyll breaks down in the cold.</p>"
        "<img src='img/leaf.png' alt='a leaf'></body></html>", encoding="utf-8")
    return folder


def by_source(documents: list[Document], name: str, page: int | None = None) -> Document:
    return next(d for d in documents if Path(d.metadata["source"]).name == name and d.metadata["page"] == page)


# --- the embeddings class ----------------------------------------------------------------------------------------


def test_importing_without_langchain_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    monkeypatch.delitem(sys.modules, "vc2l_retriever.integrations.langchain")
    with pytest.raises(ImportError, match=r"pip install 'vc2l-retriever\[langchain\]'"):
        importlib.import_module("vc2l_retriever.integrations.langchain")


def test_instances_share_one_loaded_model(micro_model_dir: Path) -> None:
    first = VC2LEmbeddings(str(micro_model_dir))
    assert VC2LEmbeddings(micro_model_dir).model is first.model
    assert VC2LEmbeddings(first.model).model is first.model


def test_vectors_are_plain_floats_equal_to_model_encode(embeddings: VC2LEmbeddings,
                                                        micro_model: vc2l_retriever.VC2LSentenceTransformer) -> None:
    texts = ["tide tables", "bicycle chains", "robins in winter", "sourdough", "solar panels"]
    vectors = embeddings.embed_documents(texts)  # batch_size 4: two forward passes
    assert all(type(v) is float for vector in vectors for v in vector)
    np.testing.assert_allclose(vectors, micro_model.encode(texts), atol=1e-5)
    np.testing.assert_allclose(embeddings.embed_query("sourdough"), vectors[3], atol=1e-6)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0] * 5, abs=1e-5)


def test_async_methods_return_the_same_vectors_as_sync(embeddings: VC2LEmbeddings) -> None:
    texts = ["alpha", "beta", "gamma"]

    async def both() -> tuple[list[list[float]], list[float]]:
        return await asyncio.gather(embeddings.aembed_documents(texts), embeddings.aembed_query("beta"))

    documents, query = asyncio.run(both())
    np.testing.assert_allclose(documents, embeddings.embed_documents(texts), atol=1e-6)
    np.testing.assert_allclose(query, embeddings.embed_query("beta"), atol=1e-6)


def test_embed_image_takes_file_paths_and_names_a_missing_file(embeddings: VC2LEmbeddings, docs: Path,
                                                               micro_model: vc2l_retriever.VC2LSentenceTransformer
                                                               ) -> None:
    leaf, stripes = docs / "img" / "leaf.png", docs / "stripes.png"
    vectors = embeddings.embed_image([str(leaf), str(stripes)])
    np.testing.assert_allclose(vectors, micro_model.encode([leaf, stripes]), atol=1e-5)
    with pytest.raises(ValueError, match=r"input 1: .*missing\.png"):
        embeddings.embed_image([str(leaf), str(docs / "missing.png")])


def test_a_document_with_image_paths_is_embedded_as_one_text_and_image_snippet(
        embeddings: VC2LEmbeddings, docs: Path, micro_model: vc2l_retriever.VC2LSentenceTransformer) -> None:
    leaf = docs / "img" / "leaf.png"
    both = Document(page_content="a green leaf", metadata={"image_paths": [str(leaf)]})
    one = Document(page_content="a green leaf", metadata={"image_path": str(leaf)})
    text_only = Document(page_content="a green leaf")
    vectors = embeddings.embed_documents_with_images([both, one, text_only])
    expected = micro_model.encode([{"text": "a green leaf", "image": [leaf]}, "a green leaf"])
    np.testing.assert_allclose(vectors, [expected[0], expected[0], expected[1]], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[2])


# --- loading and RAG over Qdrant ---------------------------------------------------------------------------------


def test_loader_yields_documents_with_provenance_and_image_files(docs: Path, tmp_path: Path) -> None:
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    loader = VC2LDocumentLoader([docs], image_dir=tmp_path / "images")
    documents = loader.load()
    assert [Path(e.source).name for e in loader.errors] == ["broken.pdf"]
    page2 = by_source(documents, "compost.pdf", page=2)
    assert "Turn the heap" in page2.page_content and page2.metadata["kind"] == "text+image"
    figure = Path(page2.metadata["image_paths"][0])
    assert figure.parent == tmp_path / "images" and Image.open(figure).size[0] > 0  # PDF figure saved as a file
    html = by_source(documents, "leaves.html")
    assert html.metadata["image_paths"] == [str(docs / "img" / "leaf.png")]
    photo = by_source(documents, "stripes.png")
    assert photo.page_content == "" and photo.metadata["kind"] == "image"
    with pytest.raises(Exception, match="broken.pdf"):
        VC2LDocumentLoader([docs], image_dir=tmp_path / "images", raise_errors=True).load()


def test_text_query_finds_the_chunk_and_image_query_finds_the_image_in_a_local_qdrant(
        embeddings: VC2LEmbeddings, docs: Path, tmp_path: Path) -> None:
    documents = VC2LDocumentLoader([docs], image_dir=tmp_path / "images").load()
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    store = vector_store(client, "docs", embeddings)
    ids = add_snippets(store, documents)
    extra = docs / "extra.png"
    Image.new("RGB", (50, 50), (250, 200, 0)).save(extra)
    add_images(store, [extra])
    assert client.count("docs").count == len(documents) + 1

    page1 = by_source(documents, "compost.pdf", page=1)
    hit = store.as_retriever(search_kwargs={"k": 3}).invoke(page1.page_content)[0]
    assert (hit.page_content, hit.metadata["page"]) == (page1.page_content, 1)
    best, score = store.similarity_search_with_score_by_vector(embeddings.embed_image([str(extra)])[0], k=1)[0]
    assert best.metadata["image_paths"] == [str(extra)] and score == pytest.approx(1.0, abs=1e-4)
    page2 = by_source(documents, "compost.pdf", page=2)  # text + PDF figure: one interleaved vector
    best = store.similarity_search_by_vector(embeddings.embed_documents_with_images([page2])[0], k=1)[0]
    assert (Path(best.metadata["source"]).name, best.metadata["page"]) == ("compost.pdf", 2)
    assert add_snippets(store, documents) == ids and client.count("docs").count == len(documents) + 1
    client.close()


def test_a_collection_written_by_the_project_indexer_is_readable_by_langchain(
        embeddings: VC2LEmbeddings, docs: Path, tmp_path: Path) -> None:
    qdrant = pytest.importorskip("vc2l_retriever.integrations.qdrant")
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    with qdrant.VC2LQdrant(embeddings.model, client=client, collection_name="vc2l") as indexer:
        indexer.index([docs])
    # LangChain's own class, told the collection's similarity (vector_store() reads it from the collection).
    store = QdrantVectorStore(client=client, collection_name="vc2l", embedding=embeddings,
                              distance=models.Distance.DOT)
    page1 = VC2LDocumentLoader([docs / "compost.pdf"], image_dir=tmp_path / "images").load()[0]
    hit = store.similarity_search(page1.page_content, k=1)[0]
    assert hit.page_content == page1.page_content
    assert (Path(hit.metadata["source"]).name, hit.metadata["page"], hit.metadata["kind"]) == ("compost.pdf", 1, "text")
    photo = store.similarity_search_by_vector(embeddings.embed_image([str(docs / "stripes.png")])[0], k=1)[0]
    assert photo.metadata["image_paths"] == [str(docs / "stripes.png")]
    other = VC2LEmbeddings(vc2l_retriever.create("micro", seed=1, device="cpu"))
    with pytest.raises(IndexMismatchError):
        vector_store(client, "vc2l", other)  # vectors of another model are never mixed in
    client.close()


def test_the_langchain_rag_example_answers_a_text_and_an_image_query(micro_model_dir: Path, docs: Path,
                                                                     tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("langchain_rag", REPO / "examples" / "langchain_rag.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    query = "Compost needs air, water and a mix of green and brown waste."
    example.main(["--model", str(micro_model_dir), "--docs", str(docs), "--index", str(tmp_path / "index"),
                  "--query", query, "--image", str(docs / "stripes.png"), "-k", "2"])
    out = capsys.readouterr().out
    text_part, image_part = out.split("Image query")
    assert text_part.split("[1]")[1].splitlines()[0].strip().startswith("compost.pdf p.1")
    assert image_part.split("[1]")[1].splitlines()[0].strip().startswith("stripes.png")
