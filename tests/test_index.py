"""Documents in, answers out: real files -> ingest -> VC2L micro model -> real Qdrant (embedded) -> hits.

The micro model has random weights, so these tests rely on what holds for any model: the same input gives the
same embedding (score 1.0), and distinct inputs give distinct embeddings.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vc2l_retriever
from vc2l_retriever import Snippet
from vc2l_retriever import index as vindex
from vc2l_retriever.cli import main
from vc2l_retriever.index import IndexInUseError, IndexMismatchError
from vc2l_retriever.integrations.qdrant import VC2LQdrant

pytest.importorskip("fpdf")
from fpdf import FPDF  # noqa: E402

RED = Image.new("RGB", (80, 60), (220, 20, 20))
STRIPES = Image.fromarray((np.indices((72, 72)).sum(0) // 6 % 2 * 255).astype(np.uint8)).convert("RGB")
CHECKS = Image.fromarray(((np.indices((64, 64)) // 8).sum(0) % 2 * 200).astype(np.uint8)).convert("RGB")


def png_with_bad_pixels(w: int = 64, h: int = 64) -> bytes:
    """A PNG whose chunks and CRCs are valid (Pillow's verify() passes) but whose pixel data is not zlib."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"not zlib data" * 8) + chunk(b"IEND", b""))


def make_pdf(path: Path, pages: list[tuple[str, Path | None]]) -> Path:
    """One short paragraph per page, optionally followed by an image."""
    pdf = FPDF()
    for text, image in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 8, text)
        if image is not None:
            pdf.image(str(image), w=40)
    pdf.output(str(path))
    return path


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    """A small corpus whose answers are unambiguous: distinct texts and distinct pictures."""
    root = tmp_path / "docs"
    (root / "img").mkdir(parents=True)
    RED.save(root / "img" / "red.png")
    STRIPES.save(root / "stripes.png")
    CHECKS.save(root / "img" / "checks.png")
    make_pdf(root / "animals.pdf", [("aardvarks dig burrows at night", None),
                                    ("blue whales sing across oceans", root / "img" / "red.png")])
    make_pdf(root / "weather.pdf", [("hailstones form inside thunderclouds", None)])
    (root / "notes.txt").write_text("zebras sleep standing up\n", encoding="utf-8")
    (root / "garden.html").write_text(
        "<html><body><h1>Tomatoes</h1><p>water tomato plants in the morning</p>"
        "<img src='img/checks.png' alt='checked cloth'></body></html>", encoding="utf-8")
    return root


@pytest.fixture()
def store(micro_model: vc2l_retriever.VC2LSentenceTransformer, tmp_path: Path) -> VC2LQdrant:
    with VC2LQdrant(micro_model, path=tmp_path / "index", batch_size=4) as s:
        yield s


def sources(hits: list[vindex.Hit]) -> list[str]:
    return [Path(h.source).name for h in hits]


def page_two(store: VC2LQdrant, docs: Path) -> vindex.Hit:
    """The text+image snippet on page 2 of animals.pdf."""
    return next(h for h in store.search("whales", limit=5, source=str(docs / "animals.pdf")) if h.snippet.page == 2)


def test_indexing_the_same_files_twice_adds_nothing_and_skips_parsing(store: VC2LQdrant, docs: Path) -> None:
    first = store.index([docs])
    n = store.count()
    second = store.index([docs])
    assert first.files == 7 and first.skipped == [] and first.snippets == n >= 8
    assert store.count() == n
    assert second.files == 0 and second.encoded == 0 and sorted(Path(s).name for s in second.unchanged) == [
        "animals.pdf", "checks.png", "garden.html", "notes.txt", "red.png", "stripes.png", "weather.pdf"]


def test_a_changed_file_replaces_its_old_points_and_keeps_the_others(store: VC2LQdrant, docs: Path) -> None:
    store.index([docs])
    notes = str(docs / "notes.txt")
    old = store.search("zebras sleep standing up", limit=50, source=notes)
    total = store.count()
    (docs / "notes.txt").write_text("giraffes sleep lying down\n", encoding="utf-8")
    report = store.index([docs])
    new = store.search("giraffes sleep lying down", limit=50, source=notes)
    assert [h.text for h in old] == ["zebras sleep standing up"]
    assert [h.text for h in new] == ["giraffes sleep lying down"] and new[0].id != old[0].id
    assert new[0].score == pytest.approx(1.0, abs=1e-4)
    assert report.files == 1 and report.replaced == 1 and len(report.unchanged) == 6
    assert store.count() == total


def test_prune_deletes_points_of_files_removed_from_the_folder_and_nothing_else(store: VC2LQdrant,
                                                                                  docs: Path) -> None:
    store.index([docs])
    total, notes = store.count(), str(docs / "notes.txt")
    n_notes = store.count(source=notes)
    (docs / "notes.txt").unlink()
    kept = store.index([docs])  # without prune, a vanished file keeps its points
    assert store.count() == total and kept.pruned == []
    report = store.index([docs], prune=True)
    assert report.pruned == [notes] and n_notes >= 1
    assert store.count(source=notes) == 0 and store.count() == total - n_notes


def test_per_file_lookups_used_on_a_server_agree_with_the_embedded_whole_collection_scan(
        store: VC2LQdrant, docs: Path) -> None:
    store.index([docs])
    whole = vindex.Manifest(store.store)
    per_file = vindex.Manifest(store.store)
    per_file._all = None  # what a server does: read each file's points through the metadata.source index
    # index_paths confines documents found in a folder argument to it, and lets them use images from anywhere in it
    key = vindex.options_key(replace(vindex.default_ingest_options(store.model), image_root=docs.absolute(),
                                     root=docs.absolute()))
    notes, digest = str(docs / "notes.txt"), vindex.hash_file(docs / "notes.txt")
    for manifest in (whole, per_file):
        assert manifest.unchanged(notes, digest, key)
        assert not manifest.unchanged(notes, "0" * 64, key) and not manifest.unchanged("/elsewhere.txt", digest, key)


def test_search_by_text_image_path_pil_image_and_snippet_finds_the_expected_document_first(
        store: VC2LQdrant, docs: Path) -> None:
    store.index([docs])
    by_text = store.search("hailstones form inside thunderclouds", limit=3)
    by_path = store.search(docs / "stripes.png", limit=3)
    by_pil = store.search(Image.open(docs / "img" / "red.png"), limit=3)
    assert sources(by_text)[0] == "weather.pdf" and by_text[0].snippet.page == 1
    assert sources(by_path)[0] == "stripes.png" and by_path[0].snippet.kind == "image"
    assert sources(by_pil)[0] == "red.png"
    for hits in (by_text, by_path, by_pil):
        assert hits[0].score == pytest.approx(1.0, abs=1e-4) and hits[0].score > hits[1].score + 1e-4
    whale = page_two(store, docs)
    assert whale.snippet.kind == "text+image" and whale.text == "blue whales sing across oceans"
    by_snippet = store.search(whale.snippet, limit=2)
    assert by_snippet[0].id == whale.id and by_snippet[0].score == pytest.approx(1.0, abs=1e-4)


def test_payload_is_langchain_shaped_with_provenance_and_a_small_thumbnail(store: VC2LQdrant, docs: Path) -> None:
    store.index([docs])
    whale = page_two(store, docs)
    md = whale.payload["metadata"]
    assert whale.payload["page_content"] == "blue whales sing across oceans"
    assert md["source"] == str(docs / "animals.pdf") and md["page"] == 2 and md["order"] == 1
    assert md["kind"] == "text+image" and md["image_paths"] == [] and len(md["file_hash"]) == 64
    thumb = Image.open(io.BytesIO(base64.b64decode(whale.payload["thumbnail"])))
    assert thumb.format == "PNG" and max(thumb.size) <= 128
    assert whale.snippet.images and whale.snippet.images[0].size == thumb.size
    garden = store.search(docs / "img" / "checks.png", limit=5, source=str(docs / "garden.html"))[0]
    assert garden.payload["metadata"]["image_paths"] == [str(docs / "img" / "checks.png")]
    assert garden.snippet.images == [docs / "img" / "checks.png"]


def test_source_filter_takes_an_exact_path_a_glob_or_a_relative_path(store: VC2LQdrant, docs: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store.index([docs])
    pdfs = store.search("zebras sleep standing up", limit=20, source=f"{docs}/*.pdf")
    assert set(sources(pdfs)) == {"animals.pdf", "weather.pdf"}
    assert set(sources(store.search(RED, limit=20, source=f"{docs}/img/*"))) == {"red.png", "checks.png"}
    assert store.count(source=str(docs / "animals.pdf")) == 2
    monkeypatch.chdir(docs)
    assert store.count(source="notes.txt") == 1 and store.count(source="nowhere/*") == 0
    groups = store.search_groups("aardvarks dig burrows at night", limit=2, group_size=5)
    assert groups[0].key == str(docs / "animals.pdf") and len(groups[0].hits) == 2 and len(groups) == 2
    assert store.delete(f"{docs}/*.pdf") == 3 and store.count(source=f"{docs}/*.pdf") == 0


@pytest.mark.parametrize("where", ["memory", "folder"])
def test_the_same_adapter_code_runs_in_memory_and_on_disk(micro_model: vc2l_retriever.VC2LSentenceTransformer,
                                                          tmp_path: Path, where: str) -> None:
    path = ":memory:" if where == "memory" else tmp_path / "idx"
    snippets = [Snippet(text=f"fact number {i}", source=f"/facts/{i % 2}.txt", order=i) for i in range(6)]
    with VC2LQdrant(micro_model, path=path, quantization=True, on_disk=True) as s:
        report = s.index(snippets)
        again = s.index(snippets)
        hit = s.search("fact number 4", limit=1)[0]
        assert (report.snippets, report.encoded, again.encoded, again.reused, s.count()) == (6, 6, 0, 6, 6)
        assert hit.text == "fact number 4" and hit.source == "/facts/0.txt" and hit.snippet.order == 4
        assert s.info()["points"] == 6 and s.info()["embedded"] is True
    if where == "folder":  # the folder keeps everything after the client is closed
        with VC2LQdrant(micro_model, path=path) as s:
            assert s.count() == 6 and s.index(snippets).reused == 6


def test_a_collection_made_by_another_model_or_size_is_refused(micro_model: vc2l_retriever.VC2LSentenceTransformer,
                                                               tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    path = tmp_path / "idx"
    VC2LQdrant(micro_model, path=path).close()
    other_weights = vc2l_retriever.create("micro", seed=1, device="cpu")
    other_size = vc2l_retriever.create("micro", seed=0, device="cpu", embed_dim=16)
    with pytest.raises(IndexMismatchError, match="was built with model .*cannot be mixed"):
        VC2LQdrant(other_weights, path=path)
    with pytest.raises(IndexMismatchError, match="holds 32-d vectors but the model makes 16-d"):
        VC2LQdrant(other_size, path=path)
    with VC2LQdrant(micro_model, path=path) as s:  # the refused attempts released the folder
        assert s.count() == 0
    client = QdrantClient(location=":memory:")  # the server code path (url=/client=), minus the server
    client.create_collection("foreign", vectors_config=models.VectorParams(size=32, distance=models.Distance.COSINE))
    with pytest.raises(IndexMismatchError, match="no VC2L model record"):
        VC2LQdrant(micro_model, client=client, collection_name="foreign")
    client.close()


def test_a_corrupt_pdf_and_a_truncated_png_are_reported_and_skipped_and_keep_old_points(
        store: VC2LQdrant, docs: Path) -> None:
    store.index([docs])
    before = store.count(source=str(docs / "stripes.png"))
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    png = (docs / "stripes.png").read_bytes()
    (docs / "stripes.png").write_bytes(png[: len(png) // 2])
    report = store.index([docs])
    skipped = dict(report.skipped)
    assert set(skipped) == {str(docs / "broken.pdf"), str(docs / "stripes.png")}
    assert all(reason for reason in skipped.values())
    assert len(report.unchanged) == 6 and before == 1
    assert store.count(source=str(docs / "stripes.png")) == 1  # never lose data on a bad re-read


def test_a_changed_file_whose_new_snippet_fails_keeps_its_old_points(store: VC2LQdrant, docs: Path) -> None:
    store.index([docs])
    garden = str(docs / "garden.html")
    before = store.search("x", limit=10, source=garden)
    (docs / "img" / "checks.png").write_bytes(png_with_bad_pixels())  # passes ingest's check, fails decoding
    (docs / "garden.html").write_text(
        "<html><body><h1>Tomatoes</h1><p>water tomato plants at dusk</p>"
        "<img src='img/checks.png' alt='checked cloth'></body></html>", encoding="utf-8")
    report = store.index([garden])
    after = store.search("x", limit=10, source=garden)
    assert [item for item, _ in report.skipped] == [f"{garden} item 0"]
    assert [h.id for h in after] == [h.id for h in before] and len(after) == 1


def test_a_bad_image_in_a_batch_is_reported_and_the_rest_is_indexed(store: VC2LQdrant, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    snippets = [Snippet(text=f"good {i}", source="/s.txt", order=i) for i in range(5)]
    snippets.insert(2, Snippet(text="broken picture", images=[bad], source="/s.txt", order=99))
    report = store.index(snippets)
    assert report.snippets == 5 and store.count() == 5
    assert len(report.skipped) == 1 and report.skipped[0][0] == "/s.txt item 99"


def test_an_indexing_run_past_the_size_threshold_optimizes_and_search_answers_the_same(
        store: VC2LQdrant, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    optimize = store.store.optimize
    monkeypatch.setattr(store.store, "optimize", lambda: calls.append("optimize") or optimize())
    monkeypatch.setattr(vindex, "OPTIMIZE_POINTS", 6)
    store.index([Snippet(text=f"fact number {i}", source="/f.txt", order=i) for i in range(4)])
    before = [(h.id, round(h.score, 5)) for h in store.search("fact number 2", limit=4)]
    assert calls == []  # 4 points: below the threshold
    store.index([Snippet(text=f"fact number {i}", source="/f.txt", order=i) for i in range(8)])
    assert calls == ["optimize"] and store.count() == 8
    store.index([])
    assert calls == ["optimize"]  # nothing written: no second build
    after = [(h.id, round(h.score, 5)) for h in store.search("fact number 2", limit=8)]
    assert after[0] == before[0] and set(before) <= set(after)


def test_a_second_process_gets_an_index_in_use_error(micro_model: vc2l_retriever.VC2LSentenceTransformer,
                                                     micro_model_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "idx"
    VC2LQdrant(micro_model, path=path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from vc2l_retriever.index import open_index; s = open_index(sys.argv[1]);"
         " print('ready', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(IndexInUseError, match="in use by another process"):
            VC2LQdrant(micro_model, path=path)
        assert main(["search", "x", "--index", str(path), "--model", str(micro_model_dir)]) == 1
        assert "in use by another process" in capsys.readouterr().err
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_cli_indexes_searches_and_describes_an_index(micro_model_dir: Path, docs: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    idx = str(tmp_path / "cli_index")
    assert main(["index", str(docs), "--index", idx, "--model", str(micro_model_dir), "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    assert "indexed 7 files" in out and "0 skipped" in out
    assert main(["search", "zebras sleep standing up", "--index", idx, "--model", str(micro_model_dir),
                 "--json", "--limit", "2"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["metadata"]["source"] == str(docs / "notes.txt") and hits[0]["score"] == pytest.approx(1, abs=1e-4)
    assert main(["search", "--image", str(docs / "stripes.png"), "--index", idx, "--model", str(micro_model_dir),
                 "--source", f"{docs}/*.png"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[2] == str(docs / "stripes.png") and "[image]" in lines[0]
    assert main(["info", "--index", idx]) == 0
    info = json.loads(capsys.readouterr().out)["collections"][0]
    assert info["collection"] == "vc2l" and info["dim"] == 32 and info["points"] >= 8
    assert info["model"]["name"] == str(micro_model_dir)


@pytest.mark.parametrize(("argv", "message"), [
    (["index", "/no/such/folder"], "no such file or directory: /no/such/folder"),
    (["search", "q", "--image", "/no/such.png"], "no such image file: /no/such.png"),
    (["search"], "give a query text, --image FILE, or both"),
    (["info"], "no index at"),
])
def test_cli_bad_arguments_exit_non_zero_with_one_line(argv: list[str], message: str, tmp_path: Path,
                                                       micro_model_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["--index", str(tmp_path / "missing")] + (["--model", str(micro_model_dir)] if argv[0] != "info" else [])
    assert main(argv + extra) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_without_a_model_uses_the_shipped_default(tmp_path: Path, docs: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert "vc2l-default" in vc2l_retriever.available_models()
    assert main(["index", str(docs), "--index", str(tmp_path / "idx")]) == 0
    assert main(["search", "--image", str(docs / "stripes.png"), "--index", str(tmp_path / "idx"), "--json",
                 "--limit", "1"]) == 0
    out = capsys.readouterr().out
    hit = json.loads(out[out.index("["):])[0]
    assert hit["score"] == pytest.approx(1.0, abs=1e-3) and "stripes.png" in json.dumps(hit)


def test_cli_names_a_missing_model(tmp_path: Path, docs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", str(docs), "--index", str(tmp_path / "idx"), "--model", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert "no VC2L model" in err and not (tmp_path / "idx").exists()


def test_cli_refuses_both_index_and_url() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "q", "--index", "a", "--url", "http://localhost:6333"])
    assert exit_info.value.code == 2


def test_console_script_searches_an_index(micro_model_dir: Path, docs: Path, tmp_path: Path) -> None:
    idx = str(tmp_path / "idx")
    assert main(["index", str(docs / "weather.pdf"), "--index", idx, "--model", str(micro_model_dir)]) == 0
    script = Path(sys.executable).parent / "vc2l"
    result = subprocess.run([str(script), "search", "hailstones form inside thunderclouds", "--index", idx,
                             "--model", str(micro_model_dir), "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert hits[0]["text"] == "hailstones form inside thunderclouds"
    assert hits[0]["metadata"]["page"] == 1
