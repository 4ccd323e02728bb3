"""``vc2l serve``: the HTTP API through Starlette's TestClient, a live server under load, the CLI, and the search page
in a real browser (Debian's chromium). The index is built from ``examples/docs`` with the micro model (random
weights: a query that is a stored snippet's exact text, or a stored image, finds that snippet first) or, where
the results must make sense to a reader, with the shipped model.
"""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("qdrant_client")
import httpx  # noqa: E402
from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import vc2l_retriever  # noqa: E402
from tests.live_server import browser_missing, chrome, free_port, live_server, percentiles  # noqa: E402
from vc2l_retriever.integrations.qdrant import VC2LQdrant  # noqa: E402
from vc2l_retriever.serve import create_app  # noqa: E402
from vc2l_retriever.serve_batch import MicroBatcher  # noqa: E402
from vc2l_retriever.serve_requests import Limits  # noqa: E402
from vc2l_retriever.store import Record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "examples" / "docs"
ROBIN, GEARS = DOCS / "images" / "robin.png", DOCS / "images" / "gears.png"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
KEY = "test-key-0123456789"


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def png_b64(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example documents (a test deletes one of its files)."""
    folder = tmp_path_factory.mktemp("serve") / "docs"
    shutil.copytree(DOCS, folder)
    return folder


@pytest.fixture(scope="module")
def store(micro_model: vc2l_retriever.VC2LSentenceTransformer, docs: Path) -> Iterator[VC2LQdrant]:
    with VC2LQdrant(micro_model, path=":memory:") as opened:
        opened.index([docs], progress=False)
        yield opened


@pytest.fixture(scope="module")
def client(store: VC2LQdrant) -> Iterator[TestClient]:
    with TestClient(create_app(store)) as test_client:
        yield test_client


def first_point(store: VC2LQdrant, kind: str) -> Any:
    return next(r for r in store.store.scroll() if r.payload["metadata"]["kind"] == kind)


# --- POST /v1/embeddings ----------------------------------------------------------------------------------------------


def test_text_embeddings_equal_model_encode_in_openai_shape(client: TestClient, micro_model: Any) -> None:
    texts = ["how often should solar panels be cleaned?", "oven temperature", "", "ünïcödé ✓"]
    response = client.post("/v1/embeddings", json={"input": texts, "model": "text-embedding-3-small"})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and body["model"] == "vc2l"
    assert [row["object"] for row in body["data"]] == ["embedding"] * 4
    assert [row["index"] for row in body["data"]] == [0, 1, 2, 3]
    expected = micro_model.encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(np.array([row["embedding"] for row in body["data"]]), expected, atol=1e-5)
    chars = sum(len(t) for t in texts)
    assert body["usage"] == {"prompt_tokens": chars, "total_tokens": chars}


def test_a_single_string_in_base64_decodes_to_the_float_vector(client: TestClient, micro_model: Any) -> None:
    as_floats = client.post("/v1/embeddings", json={"input": "tide table"}).json()["data"]
    as_b64 = client.post("/v1/embeddings", json={"input": "tide table", "encoding_format": "base64"}).json()["data"]
    assert len(as_floats) == len(as_b64) == 1
    decoded = np.frombuffer(base64.b64decode(as_b64[0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(decoded, np.array(as_floats[0]["embedding"], dtype=np.float32))
    np.testing.assert_allclose(decoded, micro_model.encode(["tide table"])[0], atol=1e-5)


def test_image_and_interleaved_inputs_equal_model_encode(client: TestClient, micro_model: Any) -> None:
    inputs = [{"image": b64(ROBIN)}, {"image": "data:image/png;base64," + b64(GEARS)},
              {"text": "Garden birds in winter", "image": b64(ROBIN)}, {"text": "only text"}]
    body = client.post("/v1/embeddings", json={"input": inputs}).json()
    expected = micro_model.encode([ROBIN, GEARS, {"text": "Garden birds in winter", "image": ROBIN}, "only text"])
    np.testing.assert_allclose(np.array([row["embedding"] for row in body["data"]]), expected, atol=1e-5)
    assert body["usage"]["prompt_tokens"] == 1 + 1 + len("Garden birds in winter") + 1 + len("only text")


BAD_BODIES = [
    ({"input": 3}, "input", "'input' must be a string or an array"),
    ({"input": []}, "input", "'input' is empty"),
    ({"input": ["ok", 7]}, "input[1]", "input[1]: expected a string or an object"),
    ({"input": ["ok", [1, 2, 3]]}, "input[1]", "token arrays are not supported"),
    ({"input": [1, 2, 3]}, "input[0]", "token arrays are not supported"),
    ({"input": [{"txt": "typo"}]}, "input[0]", "takes 'text' and/or 'image'"),
    ({"input": [{"text": 5}]}, "input[0].text", "expected a string"),
    ({"input": ["a", {"image": "not base64!"}]}, "input[1].image", "not valid base64"),
    ({"input": [{"image": base64.b64encode(b"definitely not an image").decode()}]}, "input[0].image",
     "cannot decode image"),
    ({"input": [{"image": 12}]}, "input[0].image", "must be a base64 string"),
    ({"input": [{"image": "data:image/png,plain"}]}, "input[0].image", "must be base64-encoded"),
    ({"input": [{"image": png_b64(5000, 4000)}]}, "input[0].image", "exceeds the 16000000-pixel limit"),
    ({"input": ["a"] * 257}, "input", "at most 256 per request"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format", "'float' or 'base64'"),
    ({"input": "a", "dimensions": 8}, "dimensions", "must be 32"),
    ({"input": "a", "model": 3}, "model", "'model' must be a string"),
    ({"text": "no input"}, "input", "missing 'input'"),
    (["input"], None, "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "param", "message"), BAD_BODIES, ids=[m for _, _, m in BAD_BODIES])
def test_bad_embedding_input_gets_a_400_naming_the_item_and_the_server_goes_on(
        client: TestClient, body: Any, param: str | None, message: str) -> None:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"
    assert client.get("/health").json() == {"status": "ok"}
    assert len(client.post("/v1/embeddings", json={"input": ["still fine"]}).json()["data"]) == 1


def test_images_over_the_request_pixel_budget_are_refused_before_decoding(store: VC2LQdrant) -> None:
    limits = Limits(max_image_pixels=1_000_000, max_request_pixels=1_500_000)
    with TestClient(create_app(store, limits=limits)) as small:
        response = small.post("/v1/embeddings", json={"input": [{"image": png_b64(1000, 1000)},
                                                                 {"image": png_b64(800, 800)}]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input[1].image"
    assert "exceed 1500000 pixels in all" in response.json()["error"]["message"]


def test_invalid_json_and_oversize_bodies_are_refused(store: VC2LQdrant) -> None:
    with TestClient(create_app(store, limits=Limits(max_body_bytes=1000))) as small:
        bad = small.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
        declared = small.post("/v1/embeddings", json={"input": ["x" * 2000]})
        chunked = small.post("/v1/embeddings", content=iter([b'{"input": "', b"y" * 1500, b'"}']))
        fine = small.post("/v1/embeddings", json={"input": "short"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "body_too_large"
    assert chunked.status_code == 413 and "1000-byte limit" in chunked.json()["error"]["message"]
    assert fine.status_code == 200


def test_unknown_routes_and_methods_answer_json_errors(client: TestClient) -> None:
    missing, wrong_method = client.get("/v2/nothing"), client.get("/v1/embeddings")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


# --- The micro-batcher --------------------------------------------------------------------------------------------


def test_concurrent_callers_share_passes_and_each_gets_its_own_vectors(micro_model: Any) -> None:
    from vc2l_retriever.serve import model_encoder

    batcher = MicroBatcher(model_encoder(micro_model), max_batch=16, window_ms=20)
    requests = [[f"request {i} item {j}" for j in range(i % 3 + 1)] for i in range(12)]

    async def all_at_once() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.encode(items) for items in requests))

    results = asyncio.run(all_at_once())
    for items, vectors in zip(requests, results, strict=True):
        np.testing.assert_allclose(vectors, micro_model.encode(items), atol=1e-5)
    assert batcher.stats.requests == 12 and batcher.stats.items == sum(map(len, requests))
    assert batcher.stats.passes < 12 and batcher.stats.largest_pass <= 16


def test_a_failing_request_in_a_shared_pass_fails_alone() -> None:
    def encode(items: list[Any]) -> np.ndarray:
        if "poison" in items:
            raise ValueError("poison is not embeddable")
        return np.array([[float(len(item))] for item in items])

    batcher = MicroBatcher(encode, window_ms=20)

    async def all_at_once() -> list[Any]:
        calls = [batcher.encode(["ab"]), batcher.encode(["x", "poison"]), batcher.encode(["abcd"])]
        return await asyncio.gather(*calls, return_exceptions=True)

    good, bad, other = asyncio.run(all_at_once())
    assert good.tolist() == [[2.0]] and other.tolist() == [[4.0]]
    assert isinstance(bad, ValueError) and "poison" in str(bad)


# --- POST /search ---------------------------------------------------------------------------------------------------


def test_search_by_a_stored_text_finds_it_first(client: TestClient, store: VC2LQdrant) -> None:
    point = first_point(store, "text")
    hits = client.post("/search", json={"text": point.payload["page_content"], "limit": 5}).json()["hits"]
    assert hits[0]["id"] == point.id and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["thumbnail_url"] is None and hits[0]["image_urls"] == []
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_an_interleaved_query_finds_its_snippet_first_with_its_files(client: TestClient, store: VC2LQdrant) -> None:
    point = next(r for r in store.store.scroll() if r.payload["metadata"]["kind"] == "text+image"
                 and r.payload["metadata"]["image_paths"])
    text, image = point.payload["page_content"], Path(point.payload["metadata"]["image_paths"][0])
    top = client.post("/search", json={"text": text, "image": b64(image), "limit": 5}).json()["hits"][0]
    assert top["id"] == point.id and top["score"] == pytest.approx(1.0, abs=1e-4) and top["text"] == text
    assert top["name"] == Path(point.payload["metadata"]["source"]).name and top["kind"] == "text+image"
    assert top["thumbnail_url"] == f"/points/{point.id}/thumbnail"
    assert top["source_url"] == f"/points/{point.id}/source"
    assert top["image_urls"] == [f"/points/{point.id}/image/0"] and top["open_url"] == top["source_url"]


def test_offset_pages_through_the_same_ranking(client: TestClient) -> None:
    whole = client.post("/search", json={"text": "bread", "limit": 6}).json()["hits"]
    second_page = client.post("/search", json={"text": "bread", "limit": 3, "offset": 3}).json()["hits"]
    assert [h["id"] for h in second_page] == [h["id"] for h in whole[3:6]]


def test_search_by_image_puts_that_image_first(client: TestClient) -> None:
    by_image = client.post("/search", json={"image": b64(ROBIN), "limit": 3}).json()["hits"]
    assert by_image[0]["name"] == "robin.png" and by_image[0]["kind"] == "image"
    assert by_image[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert by_image[0]["open_url"] == by_image[0]["image_urls"][0]


def test_search_groups_hits_by_document(client: TestClient) -> None:
    groups = client.post("/search", json={"text": "solar panels", "group_by_document": True, "limit": 3,
                                          "group_size": 2}).json()["groups"]
    assert len(groups) == 3 and len({g["source"] for g in groups}) == 3
    for group in groups:
        assert 1 <= len(group["hits"]) <= 2
        assert {h["source"] for h in group["hits"]} == {group["source"]}
        assert group["name"] == Path(group["source"]).name


def test_source_filter_takes_globs(client: TestClient) -> None:
    pdfs = client.post("/search", json={"text": "bread", "source": "*.pdf", "limit": 20}).json()["hits"]
    assert pdfs and {Path(h["source"]).suffix for h in pdfs} == {".pdf"}
    one = client.post("/search", json={"text": "bread", "source": "*sourdough*", "limit": 20}).json()["hits"]
    assert {h["name"] for h in one} == {"sourdough.pdf"}


BAD_SEARCHES = [
    ({}, "text", "give 'text', 'image' or both"),
    ({"text": "   "}, "text", "give 'text', 'image' or both"),
    ({"text": "a", "limit": 0}, "limit", "between 1 and 100"),
    ({"text": "a", "limit": 101}, "limit", "between 1 and 100"),
    ({"text": "a", "limit": "5"}, "limit", "must be a integer"),
    ({"text": "a", "limit": True}, "limit", "must be a integer"),
    ({"text": "a", "offset": -1}, "offset", "between 0 and 10000"),
    ({"text": "a", "lmit": 3}, "lmit", "unknown field 'lmit'"),
    ({"text": "a", "group_by_document": True, "offset": 3}, "offset", "does not apply"),
    ({"text": ["a"]}, "text", "'text' must be a string"),
    ({"image": "%%%"}, "image", "not valid base64"),
    ({"image": base64.b64encode(b"\x89PNG\r\n\x1a\n broken").decode()}, "image", "cannot decode image"),
]


@pytest.mark.parametrize(("body", "param", "message"), BAD_SEARCHES, ids=[m for _, _, m in BAD_SEARCHES])
def test_bad_search_input_gets_a_400_naming_the_field(client: TestClient, body: dict[str, Any], param: str,
                                                      message: str) -> None:
    response = client.post("/search", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"] and response.json()["error"]["param"] == param
    assert client.post("/search", json={"text": "still answering"}).status_code == 200


# --- Files of stored points ---------------------------------------------------------------------------------------


def test_stored_files_are_served_by_point_id(client: TestClient, store: VC2LQdrant) -> None:
    image_point = next(r for r in store.store.scroll() if r.payload["metadata"]["image_paths"])
    image_path = Path(image_point.payload["metadata"]["image_paths"][0])
    full = client.get(f"/points/{image_point.id}/image/0")
    assert full.status_code == 200 and full.content == image_path.read_bytes()
    assert full.headers["content-type"] == "image/png" and full.headers["content-security-policy"] == "sandbox"
    thumb = client.get(f"/points/{image_point.id}/thumbnail")
    assert thumb.headers["content-type"] == "image/png"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    source = client.get(f"/points/{image_point.id}/source")
    assert source.content == Path(image_point.payload["metadata"]["source"]).read_bytes()
    pdf_point = next(r for r in store.store.scroll() if r.payload["metadata"]["source"].endswith(".pdf"))
    assert client.get(f"/points/{pdf_point.id}/source").headers["content-type"] == "application/pdf"


@pytest.mark.parametrize("url", [
    f"/points/{uuid.uuid4()}/source",  # a well-formed ID that is not stored
    "/points/not-a-uuid/source",
    "/points/..%2F..%2Fetc%2Fpasswd/source",
    "/points/%2Fetc%2Fpasswd/image/0",
    "/points/../../etc/passwd",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/serve.py",
])
def test_file_endpoints_refuse_ids_and_paths_that_were_not_stored(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert b"root:" not in response.content and b"def create_app" not in response.content


def test_file_endpoints_ignore_paths_in_the_query_and_unknown_image_numbers(client: TestClient,
                                                                            store: VC2LQdrant) -> None:
    text_point = first_point(store, "text")
    assert client.get(f"/points/{text_point.id}/image/0?path=/etc/passwd").status_code == 404
    assert client.get(f"/points/{text_point.id}/thumbnail?path=/etc/passwd").status_code == 404
    image_point = first_point(store, "image")
    assert client.get(f"/points/{image_point.id}/image/1").status_code == 404


def test_a_stored_file_deleted_since_indexing_is_a_404(client: TestClient, store: VC2LQdrant, docs: Path) -> None:
    gone = docs / "birds.html"
    point = next(r for r in store.store.scroll() if r.payload["metadata"]["source"] == str(gone))
    gone.unlink()
    response = client.get(f"/points/{point.id}/source")
    assert response.status_code == 404 and response.json()["error"]["code"] == "file_gone"


def test_a_point_that_only_claims_a_file_never_gets_it_served(client: TestClient, store: VC2LQdrant,
                                                               docs: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:the secret\n")
    vector = [1.0] + [0.0] * (store.identity.dim - 1)
    forged = {"page_content": "hello", "metadata": {"source": str(secret), "image_paths": [str(secret)],
                                                    "file_hash": "0" * 64},
              "vc2l": {"content_hash": "0" * 64}}
    no_hash = {"page_content": "hello", "metadata": {"source": str(secret)}}  # as a framework could write it
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    store.store.upsert([Record(ids[0], forged, vector), Record(ids[1], no_hash, vector)])
    try:
        for point_id in ids:
            for what in ("source", "image/0", "thumbnail"):
                response = client.get(f"/points/{point_id}/{what}")
                assert response.status_code == 404 and b"root:x" not in response.content
    finally:
        store.store.delete_ids(ids)  # the module's other tests expect the indexed points only
    changed = docs / "tides.html"  # a real indexed file, edited since: its point no longer vouches for it
    point = next(r for r in store.store.scroll() if r.payload["metadata"]["source"] == str(changed))
    assert client.get(f"/points/{point.id}/source").status_code == 200
    original = changed.read_text()
    changed.write_text(original + "<!-- edited -->")
    try:
        response = client.get(f"/points/{point.id}/source")
        assert response.status_code == 404 and response.json()["error"]["code"] == "file_gone"
    finally:
        changed.write_text(original)


# --- The API key, the page, the schema ----------------------------------------------------------------------------


def test_the_api_key_is_required_on_every_data_route_when_set(store: VC2LQdrant) -> None:
    point = first_point(store, "image")
    with TestClient(create_app(store, api_key=KEY)) as keyed:
        routes = [("GET", "/health"), ("GET", "/info"), ("GET", "/sources"), ("GET", "/openapi.json"),
                  ("POST", "/v1/embeddings"), ("POST", "/search"), ("GET", f"/points/{point.id}/thumbnail"),
                  ("GET", f"/points/{point.id}/image/0"), ("GET", f"/points/{point.id}/source")]
        for method, url in routes:
            body = {"input": "x"} if url == "/v1/embeddings" else {"text": "x"}
            kwargs: dict[str, Any] = {"json": body} if method == "POST" else {}
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                refused = keyed.request(method, url, headers=headers, **kwargs)
                assert refused.status_code == 401, (url, headers)
                assert refused.json()["error"]["code"] == "invalid_api_key"
                assert refused.headers["www-authenticate"] == "Bearer"
            allowed = keyed.request(method, url, headers={"Authorization": f"Bearer {KEY}"}, **kwargs)
            assert allowed.status_code == 200, url
        assert keyed.get("/").status_code == 200 and keyed.get("/static/app.js").status_code == 200
        assert keyed.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()["security"]


def test_the_page_loads_nothing_from_the_internet(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/", "/static/app.js", "/static/style.css"):
        text = client.get(asset).text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_info_reports_the_model_and_the_points(client: TestClient, store: VC2LQdrant) -> None:
    info = client.get("/info").json()
    assert info["points"] == store.count() and info["model"]["dim"] == store.identity.dim
    assert info["model"]["weights_hash"] == store.identity.weights_hash
    assert info["limits"]["max_items"] == 256
    sources = {s["name"] for s in client.get("/sources").json()["sources"]}
    assert {"solar_maintenance.pdf", "robin.png", "tides.html"} <= sources


def test_openapi_documents_every_route_of_the_app(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in schema["paths"].items() for method in ops}
    routes = {(r.path.replace("{n:int}", "{n}"), m) for r in client.app.routes
              if hasattr(r, "methods") and r.path != "/" for m in r.methods if m != "HEAD"}
    assert routes == documented
    request = schema["components"]["schemas"]["EmbeddingRequest"]
    assert request["properties"]["input"]["oneOf"][1]["maxItems"] == 256
    assert schema["components"]["schemas"]["Hit"]["properties"]["thumbnail_url"]


# --- A live server: load, batching, the CLI -------------------------------------------------------------------------

ANCHOR = "the lighthouse keeper counts seventeen ships before dawn"
SEARCHERS, REQUESTS_EACH, NEW_FILES, LOAD_DEADLINE_S = 8, 25, 30, 120.0


def _searcher(base: str, worker: int, latencies: list[float], failures: list[str], anchors: list[str]) -> None:
    """Searches (text, image) and embedding requests, one after another; records latency and any failure."""
    deadline = time.monotonic() + LOAD_DEADLINE_S
    with httpx.Client(base_url=base, timeout=60) as http:
        for i in range(REQUESTS_EACH):
            if time.monotonic() > deadline:
                failures.append(f"searcher {worker}: deadline passed after {i} requests")
                return
            kind = ("search", "embed", "image")[(worker + i) % 3]
            start = time.perf_counter()
            try:
                if kind == "embed":
                    r = http.post("/v1/embeddings", json={"input": [f"worker {worker} request {i}", ANCHOR]})
                elif kind == "image":
                    r = http.post("/search", json={"image": b64(ROBIN), "limit": 3})
                else:
                    r = http.post("/search", json={"text": ANCHOR, "limit": 5})
            except httpx.HTTPError as e:
                failures.append(f"searcher {worker} request {i}: {type(e).__name__}: {e}")
                continue
            latencies.append(time.perf_counter() - start)
            if r.status_code != 200:
                failures.append(f"searcher {worker} request {i} ({kind}): HTTP {r.status_code} {r.text[:200]}")
            elif kind == "search":
                anchors.append(r.json()["hits"][0]["text"])


def test_concurrent_searchers_while_an_indexer_writes_all_get_answers(
        micro_model: Any, docs: Path, tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "anchor.txt").write_text(ANCHOR, encoding="utf-8")
    new = tmp_path / "new"
    new.mkdir()
    with VC2LQdrant(micro_model, path=tmp_path / "index", batch_size=4) as store:
        store.index([tmp_path / "base", DOCS / "images"], progress=False)
        before = store.count()
        latencies: list[float] = []
        failures: list[str] = []
        anchors: list[str] = []
        written: list[int] = []

        def indexer() -> None:
            for i in range(NEW_FILES):  # one file a call: many small writes interleave with the searches
                path = new / f"note{i:03d}.txt"
                path.write_text(f"note {i}: the tide turns at {i % 12} o'clock\n\nsecond paragraph {i * 7}")
                written.append(store.index([path], progress=False).snippets)

        with live_server(create_app(store)) as base:
            start = time.perf_counter()
            threads = [threading.Thread(target=indexer)] + [
                threading.Thread(target=_searcher, args=(base, w, latencies, failures, anchors))
                for w in range(SEARCHERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=LOAD_DEADLINE_S + 30)
            elapsed = time.perf_counter() - start
        assert not any(t.is_alive() for t in threads), "load test did not finish in time"
        p50, p99 = percentiles(latencies)
        print(f"\nload: {len(latencies)} requests from {SEARCHERS} concurrent clients in {elapsed:.1f} s "
              f"({len(latencies) / elapsed:.0f}/s) while {len(written)} files were indexed; p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms, {len(failures)} failures")
        assert failures == []
        assert len(latencies) == SEARCHERS * REQUESTS_EACH
        assert set(anchors) == {ANCHOR}  # the stored text stays the top hit while other files arrive
        assert len(written) == NEW_FILES and store.count() == before + sum(written)


def _embed_load(base: str, clients: int, each: int) -> tuple[list[float], float, list[list[float]]]:
    """``clients`` threads each sending ``each`` one-query embedding requests; latencies, wall time, vectors."""
    latencies: list[float] = []
    vectors: list[list[float]] = []

    def client(worker: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            for i in range(each):
                start = time.perf_counter()
                r = http.post("/v1/embeddings", json={"input": f"how do I clean panel {worker}-{i}?"})
                latencies.append(time.perf_counter() - start)
                r.raise_for_status()
                if worker == 0 and i == 0:
                    vectors.append(r.json()["data"][0]["embedding"])

    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return latencies, time.perf_counter() - start, vectors


def test_micro_batching_is_measured_against_one_pass_per_request(shipped_store: VC2LQdrant) -> None:
    clients, each = 8, 8
    figures = {}
    for batching in (False, True):
        app = create_app(shipped_store, batching=batching)
        with live_server(app) as base:
            _embed_load(base, 2, 2)  # warm-up: first passes allocate
            latencies, wall, vectors = _embed_load(base, clients, each)
        stats = app.state.vc2l.batcher.stats
        assert len(latencies) == clients * each
        figures[batching] = (len(latencies) / wall, *percentiles(latencies), stats.passes, stats.requests, vectors)
    for batching, (rate, p50, p99, passes, requests, _) in figures.items():
        print(f"\nbatching {'on ' if batching else 'off'}: {rate:.1f} requests/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
              f"{passes} passes for {requests} requests ({clients} concurrent clients, shipped model)")
    np.testing.assert_allclose(figures[True][5], figures[False][5], atol=1e-5)  # the same vector either way
    assert figures[True][3] < figures[True][4]  # concurrent requests did share passes
    assert figures[False][3] == figures[False][4]


@pytest.fixture(scope="module")
def shipped_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VC2LQdrant]:
    """The shipped default model over examples/docs: results a person would expect."""
    with VC2LQdrant(vc2l_retriever.load(), path=tmp_path_factory.mktemp("shipped") / "index") as opened:
        opened.index([DOCS], progress=False)
        yield opened


def test_vc2l_serve_command_serves_an_index_with_its_key(micro_model: Any, micro_model_dir: Path,
                                                         tmp_path: Path) -> None:
    with VC2LQdrant(micro_model, path=tmp_path / "index") as store:
        points = store.index([DOCS / "images"], progress=False).snippets
    port = free_port()
    command = [sys.executable, "-m", "vc2l_retriever.cli", "serve", "--index", str(tmp_path / "index"),
               "--model", str(micro_model_dir), "--port", str(port), "--api-key", KEY]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        info = _wait_for(f"http://127.0.0.1:{port}/info", {"Authorization": f"Bearer {KEY}"}, server)
        assert info["points"] == points and info["api_key_required"] is True
        assert httpx.get(f"http://127.0.0.1:{port}/info").status_code == 401
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert f"{points} points in collection 'vc2l'" in stderr and f"http://127.0.0.1:{port}/" in stderr


def _wait_for(url: str, headers: dict[str, str], process: subprocess.Popen[str], seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"vc2l serve exited with {process.returncode}: {process.stderr.read()}")
        try:
            return httpx.get(url, headers=headers, timeout=5).raise_for_status().json()
        except httpx.HTTPError:
            time.sleep(0.25)
    raise AssertionError(f"vc2l serve did not answer {url} within {seconds} s")


def test_vc2l_serve_refuses_a_missing_index(tmp_path: Path) -> None:
    from vc2l_retriever.cli import main

    assert main(["serve", "--index", str(tmp_path / "nothing"), "--port", "9"]) == 1


# --- The search page in a real browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = browser_missing()
    if missing:
        pytest.skip(f"browser test skipped: {missing}")
    driver = chrome(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Any, what: str, seconds: float = 60) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page re-renders its result list as results arrive: an element found mid-render may go stale.
    return WebDriverWait(driver, seconds, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
                         ).until(condition, message=f"waiting for {what}")


def _cards(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#results li.card")


def _first_card_from(driver: Any, name: str) -> Any:
    cards = _cards(driver)
    return cards[0] if cards and cards[0].get_attribute("data-source") == name else False


def _in_new_tab(driver: Any, page: str, url_end: str) -> None:
    _wait(driver, lambda d: len(d.window_handles) == 2, "a new tab")
    driver.switch_to.window(next(h for h in driver.window_handles if h != page))
    _wait(driver, lambda d: d.current_url.endswith(url_end), f"a URL ending {url_end}")


def _check_accessible_basics(driver: Any) -> None:
    """Every form control has a label; every thumbnail has alt text."""
    from selenium.webdriver.common.by import By

    for control in driver.find_elements(By.CSS_SELECTOR, "input:not([type=checkbox])"):
        assert driver.find_elements(By.CSS_SELECTOR, f"label[for='{control.get_attribute('id')}']"), control
    assert all(img.get_attribute("alt") for img in driver.find_elements(By.CSS_SELECTOR, "#results img"))


def test_the_search_page_finds_documents_by_text_and_by_image_and_opens_them(browser: Any,
                                                                            shipped_store: VC2LQdrant) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with live_server(create_app(shipped_store, model_name="vc2l-default")) as base:
        browser.get(base + "/")
        _wait(browser, lambda d: "snippets" in d.find_element(By.ID, "index-info").text, "index info")
        browser.find_element(By.ID, "q").send_keys("how often should solar panels be cleaned?", Keys.ENTER)
        top = _wait(browser, lambda d: _first_card_from(d, "solar_maintenance.pdf"), "the solar PDF first")
        assert "page 1" in top.text and "score" in top.text
        marked = {m.text.lower() for m in top.find_elements(By.TAG_NAME, "mark")}
        assert {"solar", "panels"} & marked, marked  # the query's words are highlighted
        _wait(browser, lambda d: all(i.get_property("naturalWidth") > 0
                                     for i in d.find_elements(By.CSS_SELECTOR, "#results img")), "thumbnails")
        _check_accessible_basics(browser)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "serve_page.png"))
        print(f"\nscreenshot: {ARTIFACTS / 'serve_page.png'}")
        page = browser.current_window_handle
        top.find_element(By.CSS_SELECTOR, "a.open").click()  # the document, at the hit's page
        _in_new_tab(browser, page, "/source#page=1")
        assert browser.execute_script("return document.contentType") == "application/pdf"
        browser.close()
        browser.switch_to.window(page)

        browser.find_element(By.ID, "q").clear()  # with text in the box, text and image make one query
        browser.find_element(By.ID, "image").send_keys(str(ROBIN))  # the file picker; searching starts at once
        robin = _wait(browser, lambda d: _first_card_from(d, "robin.png"), "the robin image first")
        assert "image" in robin.text
        browser.save_screenshot(str(ARTIFACTS / "serve_page_image_search.png"))
        browser.find_element(By.ID, "group").click()  # the same query, grouped by document
        headings = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results section.group h2"), "groups")
        assert headings[0].text == "robin.png" and len({h.text for h in headings}) == len(headings)
        browser.find_element(By.ID, "group").click()
        # Cards inside groups match too: wait for the grouped view to be replaced, not just for a robin card.
        robin = _wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "#results section.group")
                      and _first_card_from(d, "robin.png"), "the ungrouped list again")

        robin.find_element(By.CSS_SELECTOR, "a.thumb").click()  # opens the stored image at full size
        _in_new_tab(browser, page, "/image/0")
        width = _wait(browser, lambda d: d.execute_script(
            "const i = document.querySelector('img'); return i && i.complete && i.naturalWidth"), "the image")
        assert width == Image.open(ROBIN).width
        browser.close()
        browser.switch_to.window(page)


def test_the_search_page_works_with_an_api_key(browser: Any, store: VC2LQdrant) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with live_server(create_app(store, api_key=KEY)) as base:
        browser.get(base + "/")
        _wait(browser, lambda d: "API key" in d.find_element(By.ID, "status").text, "the key prompt")
        assert browser.switch_to.active_element.get_attribute("id") == "api-key"  # focus is where it is needed
        browser.find_element(By.ID, "api-key").send_keys(KEY, Keys.TAB)
        _wait(browser, lambda d: "snippets" in d.find_element(By.ID, "index-info").text, "index info with the key")
        browser.find_element(By.ID, "image").send_keys(str(GEARS))
        card = _wait(browser, lambda d: _first_card_from(d, "gears.png"), "the gears image first")
        _wait(browser, lambda d: card.find_element(By.TAG_NAME, "img").get_attribute("src").startswith("blob:")
              and card.find_element(By.TAG_NAME, "img").get_property("naturalWidth") > 0, "a thumbnail via the key")
