"""LangChain's and LlamaIndex's vector stores over the project's store: one index, three readers and writers.

An index written by the project's indexer is searched from LangChain, LlamaIndex and the CLI, and what each framework
adds is found by the others, embedded (Qdrant Edge in a temporary folder) and through a ``QdrantClient`` (the server
code path, on qdrant-client's in-memory mode). LangChain's own ``VectorStoreIntegrationTests`` run unchanged on both.
The micro model has random weights, so retrieval tests query with a stored text or image: its cosine is 1.0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")
pytest.importorskip("qdrant_edge")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402
from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.embeddings import MockEmbedding  # noqa: E402
from llama_index.core.schema import ImageNode, NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from qdrant_client import QdrantClient, models  # noqa: E402

import vc2l_retriever  # noqa: E402
from vc2l_retriever import cli  # noqa: E402
from vc2l_retriever.index import IndexInUseError, IndexMismatchError  # noqa: E402
from vc2l_retriever.integrations import langchain as lc  # noqa: E402
from vc2l_retriever.integrations import llamaindex as li  # noqa: E402
from vc2l_retriever.integrations._common import point_key  # noqa: E402
from vc2l_retriever.integrations.qdrant import VC2LQdrant  # noqa: E402

TEXTS = {"compost.txt": "Compost needs air, water and a mix of green and brown waste.",
         "tides.txt": "The tide turns twice a day along the northern coast.",
         "leaves.txt": "Leaves turn red when chlorophyll breaks down in the cold."}
ASYNC_MARKS = [
    # The standard suite's async tests are plain ``async def``; this repo runs pytest-asyncio in strict mode.
    pytest.mark.asyncio,
    pytest.mark.filterwarnings("ignore:The test <Function .*is marked with '@pytest.mark.asyncio'"),
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant"),
]
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant")


# --- LangChain's standard suite --------------------------------------------------------------------------------------


class TestVC2LVectorStoreEmbeddedStandard(VectorStoreIntegrationTests):
    """LangChain's standard vector store suite, unchanged, on an embedded index in a temporary folder."""

    pytestmark = ASYNC_MARKS

    @pytest.fixture()
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:
        with lc.VC2LVectorStore(self.get_embeddings(), path=tmp_path / "index") as store:
            yield store


class TestVC2LVectorStoreServerStandard(VectorStoreIntegrationTests):
    """The same suite through a ``QdrantClient`` (the server code path)."""

    pytestmark = ASYNC_MARKS

    @pytest.fixture()
    def vectorstore(self) -> Iterator[VectorStore]:
        client = QdrantClient(location=":memory:")
        with lc.VC2LVectorStore(self.get_embeddings(), client=client, collection_name="standard") as store:
            yield store
        client.close()


# --- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(micro_model_dir: Path) -> vc2l_retriever.VC2LSentenceTransformer:
    """The saved micro model as the CLI loads it, so every reader and writer records the same model."""
    return lc.VC2LEmbeddings(str(micro_model_dir)).model


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    """Three text files and a picture."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    stripes = (np.indices((60, 60)).sum(0) // 5 % 2 * 255).astype(np.uint8)
    Image.fromarray(stripes).convert("RGB").save(folder / "stripes.png")
    return folder


@pytest.fixture()
def leaf(tmp_path: Path) -> Path:
    path = tmp_path / "leaf.png"
    Image.new("RGB", (64, 48), (30, 160, 40)).save(path)
    return path


def index_docs(model: vc2l_retriever.VC2LSentenceTransformer, docs: Path, **where: object) -> int:
    """Index ``docs`` with the project's indexer (closed afterwards: an embedded folder has one opener)."""
    with VC2LQdrant(model, **where) as indexer:
        indexer.index([docs], progress=False)
        return indexer.count()


def cli_search(capsys: pytest.CaptureFixture[str], model_dir: Path, index: Path, query: str) -> list[dict]:
    assert cli.main(["search", query, "--index", str(index), "--model", str(model_dir), "--limit", "1",
                     "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --- one index, written by the indexer, read by both frameworks --------------------------------------------------


def test_langchain_finds_what_vc2l_index_wrote_by_text_and_by_image(model, docs: Path, tmp_path: Path) -> None:
    path = tmp_path / "index"
    index_docs(model, docs, path=path)
    embeddings = lc.VC2LEmbeddings(model)
    with lc.VC2LVectorStore(embeddings, path=path) as store:
        for name, text in TEXTS.items():
            hit, score = store.similarity_search_with_score(text, k=1)[0]
            assert (Path(hit.metadata["source"]).name, hit.page_content) == (name, text)
            assert score == pytest.approx(1.0, abs=1e-4) and hit.metadata["kind"] == "text"
        image = store.similarity_search_by_vector(embeddings.embed_image([str(docs / "stripes.png")])[0], k=1)[0]
        assert image.metadata["image_paths"] == [str(docs / "stripes.png")] and image.page_content == ""
        retrieved = store.as_retriever(search_kwargs={"k": 2}).invoke(TEXTS["tides.txt"])
        assert retrieved[0].page_content == TEXTS["tides.txt"] and len(retrieved) == 2
        only = store.similarity_search(TEXTS["tides.txt"], k=3, filter={"source": str(docs / "leaves.txt")})
        assert [d.page_content for d in only] == [TEXTS["leaves.txt"]]
        assert store.get_by_ids([retrieved[0].id])[0].page_content == TEXTS["tides.txt"]


def test_llamaindex_finds_what_vc2l_index_wrote_as_text_and_image_nodes(model, docs: Path, tmp_path: Path) -> None:
    path = tmp_path / "index"
    index_docs(model, docs, path=path)
    embed_model = li.VC2LEmbedding(model)
    with li.VC2LVectorStore(path=path, embed_model=embed_model) as store:
        index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
        for name, text in TEXTS.items():
            best = index.as_retriever(similarity_top_k=2).retrieve(text)[0]
            assert (best.node.text, Path(best.node.metadata["source"]).name) == (text, name)
            assert best.score == pytest.approx(1.0, abs=1e-4) and "thumbnail" not in best.node.metadata
        stripes = embed_model.get_image_embedding(str(docs / "stripes.png"))
        found = store.query(VectorStoreQuery(query_embedding=stripes, similarity_top_k=1))
        assert isinstance(found.nodes[0], ImageNode) and found.nodes[0].image_path == str(docs / "stripes.png")
        source = str(docs / "compost.txt")
        only = MetadataFilters(filters=[MetadataFilter(key="source", value=source)])
        hits = index.as_retriever(similarity_top_k=3, filters=only).retrieve(TEXTS["tides.txt"])
        assert [h.node.text for h in hits] == [TEXTS["compost.txt"]]
        store.delete(ref_doc_id=source)  # the indexer's document is its source file
        assert store.client.count() == len(TEXTS)  # two text files and the picture are left


# --- what each framework adds is found by the indexer's search and the CLI -----------------------------------------


def test_documents_added_through_langchain_are_found_by_vc2l_search_and_the_cli(
        model, micro_model_dir: Path, docs: Path, leaf: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "index"
    embeddings = lc.VC2LEmbeddings(model)
    added = [Document(page_content="Owls hunt at dusk over the meadow.", metadata={"source": "owls", "page": 3}),
             Document(page_content="A green leaf", metadata={"image_paths": [str(leaf)], "topic": "botany"})]
    with lc.VC2LVectorStore(embeddings, path=path) as store:
        ids = store.add_documents(added, ids=["owls-1", None])
        assert store.add_documents(added, ids=["owls-1", None]) == ids  # the same content: the same ID
        assert store.get_by_ids(ids) == [Document(id=i, page_content=d.page_content, metadata=d.metadata)
                                         for i, d in zip(ids, added, strict=True)]
    with VC2LQdrant(model, path=path) as indexer:
        assert indexer.count() == 2
        owls = indexer.search(added[0].page_content, limit=1)[0]
        assert (owls.id, owls.text, owls.source, owls.snippet.page) == (point_key("owls-1"), added[0].page_content,
                                                                       "owls", 3)
        both = indexer.search({"text": "A green leaf", "image": [leaf]}, limit=1)[0]  # ONE text+image vector
        assert both.id == ids[1] and both.score == pytest.approx(1.0, abs=1e-4)
        assert both.snippet.kind == "text+image" and both.payload["metadata"]["topic"] == "botany"
        assert both.payload["thumbnail"]  # a preview, as `vc2l index` stores one
    assert cli_search(capsys, micro_model_dir, path, added[0].page_content)[0]["id"] == point_key("owls-1")


def test_nodes_added_through_llamaindex_are_found_by_vc2l_search_langchain_and_llamaindex(
        model, micro_model_dir: Path, leaf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "index"
    embed_model = li.VC2LEmbedding(model)
    nodes = [TextNode(text="Bees dance to show where the flowers are.", id_="bees",
                      metadata={"source": "bees.md", "page": 2}, excluded_embed_metadata_keys=["source", "page"]),
             ImageNode(image_path=str(leaf), id_="5c2bd3c4-0d58-4a5e-9d0e-6c1d0f6f1a11", metadata={"source": "leaf"})]
    with li.VC2LVectorStore(path=path, embed_model=embed_model) as store:
        embed_model(nodes)  # as a transformation: the ImageNode is embedded as its image, not as its metadata text
        VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                         embed_model=embed_model)
        got = store.get_nodes(["5c2bd3c4-0d58-4a5e-9d0e-6c1d0f6f1a11", "bees"])
        assert [type(n).__name__ for n in got] == ["ImageNode", "TextNode"]
        assert (got[1].node_id, got[1].text, got[1].metadata) == ("bees", nodes[0].text, nodes[0].metadata)
        assert got[0].image_path == str(leaf)
    with VC2LQdrant(model, path=path) as indexer:
        bees = indexer.search(nodes[0].text, limit=1)[0]
        assert (bees.id, bees.source, bees.snippet.page) == (point_key("bees"), "bees.md", 2)
        image = indexer.search(leaf, limit=1)[0]
        assert image.id == nodes[1].node_id and image.snippet.images == [leaf]
        assert image.score == pytest.approx(1.0, abs=1e-4)
    with lc.VC2LVectorStore(lc.VC2LEmbeddings(model), path=path) as store:
        hit = store.similarity_search(nodes[0].text, k=1)[0]
        assert (hit.id, hit.page_content, hit.metadata["source"]) == ("bees", nodes[0].text, "bees.md")
    assert cli_search(capsys, micro_model_dir, path, nodes[0].text)[0]["metadata"]["source"] == "bees.md"


# --- the server code path ------------------------------------------------------------------------------------------


def test_both_framework_stores_share_one_collection_through_a_qdrant_client(model, docs: Path) -> None:
    client = QdrantClient(location=":memory:")
    points = index_docs(model, docs, client=client)
    embeddings, embed_model = lc.VC2LEmbeddings(model), li.VC2LEmbedding(model)
    langchain_store = lc.VC2LVectorStore(embeddings, client=client)
    llama_store = li.VC2LVectorStore(client=client, embed_model=embed_model)
    assert langchain_store.similarity_search(TEXTS["compost.txt"], k=1)[0].page_content == TEXTS["compost.txt"]
    retriever = VectorStoreIndex.from_vector_store(llama_store, embed_model=embed_model).as_retriever()
    assert retriever.retrieve(TEXTS["leaves.txt"])[0].node.text == TEXTS["leaves.txt"]
    langchain_store.add_texts(["Otters hold hands while they sleep."], [{"source": "otters"}], ids=["otter"])
    llama_node = TextNode(text="Swifts sleep on the wing.", id_="swift", embedding=embed_model.encode(
        ["Swifts sleep on the wing."])[0])
    llama_store.add([llama_node])
    with VC2LQdrant(model, client=client) as indexer:
        assert indexer.count() == points + 2
        assert indexer.search("Otters hold hands while they sleep.", limit=1)[0].id == point_key("otter")
        assert indexer.search("Swifts sleep on the wing.", limit=1)[0].id == point_key("swift")
    assert llama_store.query(VectorStoreQuery(query_embedding=embeddings.embed_query(
        "Otters hold hands while they sleep."), similarity_top_k=1)).nodes[0].metadata["source"] == "otters"
    assert langchain_store.get_by_ids(["swift"])[0].page_content == "Swifts sleep on the wing."
    langchain_store.close()
    llama_store.close()
    assert client.count("vc2l").count == points + 2  # closing the stores leaves a client passed in open
    client.close()


# --- behaviour of each store -------------------------------------------------------------------------------------


def test_stores_refuse_another_model_and_a_folder_that_is_already_open(model, docs: Path, tmp_path: Path) -> None:
    path = tmp_path / "index"
    index_docs(model, docs, path=path)
    with pytest.raises(IndexMismatchError):
        lc.VC2LVectorStore(DeterministicFakeEmbedding(size=6), path=path)
    with pytest.raises(IndexMismatchError):
        li.VC2LVectorStore(path=path, embed_model=MockEmbedding(embed_dim=model.get_embedding_dimension()))
    with lc.VC2LVectorStore(lc.VC2LEmbeddings(model), path=path), pytest.raises(IndexInUseError):
        li.VC2LVectorStore(path=path)
    with li.VC2LVectorStore(path=path) as store:  # no model given: the collection's record is trusted
        assert store.client.count() == len(TEXTS) + 1


def test_langchain_store_keeps_caller_ids_and_metadata_and_filters_by_it(tmp_path: Path) -> None:
    embeddings = DeterministicFakeEmbedding(size=8)
    texts = ["alpha", "beta", "gamma", "delta"]
    metadatas = [{"n": i, "tags": ["even" if i % 2 == 0 else "odd"], "score": i / 2} for i in range(4)]
    with lc.VC2LVectorStore.from_texts(texts, embeddings, metadatas, ids=["a", "b", "c", "d"],
                                       path=tmp_path / "index") as store:
        assert [d.id for d in store.get_by_ids(["d", "missing", "a"])] == ["d", "a"]
        assert store.get_by_ids(["b"])[0].metadata == {"n": 1, "tags": ["odd"], "score": 0.5}
        assert sorted(d.id for d in store.similarity_search("alpha", k=4, filter={"tags": "odd"})) == ["b", "d"]
        assert [d.id for d in store.similarity_search("alpha", k=4, filter={"score": 1.0})] == ["c"]
        ranged = models.Filter(must=[models.FieldCondition(key="metadata.n", range=models.Range(gte=2))])
        assert sorted(d.id for d in store.similarity_search("alpha", k=4, filter=ranged)) == ["c", "d"]
        assert store.max_marginal_relevance_search("alpha", k=2, fetch_k=4)[0].id == "a"
        store.delete(filter={"n": [0, 1]})
        assert sorted(d.id for d in store.similarity_search("alpha", k=4)) == ["c", "d"]
        with pytest.raises(ValueError, match="give ids or filter"):
            store.delete()


def test_llamaindex_store_applies_metadata_filters_node_ids_and_doc_ids(tmp_path: Path) -> None:
    vectors = np.eye(4).tolist()
    nodes = [TextNode(text=f"node {i}", id_=f"n{i}", metadata={"n": i, "colour": "red" if i < 2 else "blue"},
                      embedding=vectors[i],
                      relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{i // 2}")})
             for i in range(4)]
    query = [1.0, 0.5, 0.25, 0.125]

    def ids(**kwargs: object) -> list[str]:
        return store.query(VectorStoreQuery(query_embedding=query, similarity_top_k=4, **kwargs)).ids

    with li.VC2LVectorStore(path=tmp_path / "index", embed_model=MockEmbedding(embed_dim=4)) as store:
        assert store.add(nodes) == ["n0", "n1", "n2", "n3"]
        assert ids() == ["n0", "n1", "n2", "n3"]
        blue = MetadataFilters(filters=[MetadataFilter(key="colour", value="blue")])
        assert ids(filters=blue) == ["n2", "n3"]
        high_or_first = MetadataFilters(condition=FilterCondition.OR, filters=[
            MetadataFilter(key="n", value=2, operator=FilterOperator.GTE),
            MetadataFilter(key="n", value=[0], operator=FilterOperator.IN)])
        assert ids(filters=high_or_first) == ["n0", "n2", "n3"]
        not_red = MetadataFilters(filters=[MetadataFilter(key="colour", value="red", operator=FilterOperator.NE)])
        assert ids(filters=not_red, node_ids=["n0", "n3"]) == ["n3"]
        assert ids(doc_ids=["doc-1"]) == ["n2", "n3"]
        assert store.get_nodes(["n3", "n0"])[1].ref_doc_id == "doc-0"
        store.delete("doc-1")
        assert ids() == ["n0", "n1"]
        store.delete_nodes(["n1"])
        assert [n.node_id for n in store.get_nodes()] == ["n0"]
        with pytest.raises(ValueError, match="give node_ids or filters"):
            store.delete_nodes()
