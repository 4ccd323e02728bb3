"""Document ingestion: real PDFs (fpdf2), HTML, Markdown and image files generated in tmp_path."""

from __future__ import annotations

import base64
import io
import os
import pickle
import time
from pathlib import Path

import pytest
from PIL import Image

from vc2l_retriever.ingest import (
    SUPPORTED_SUFFIXES,
    ImageResolver,
    IngestError,
    IngestOptions,
    canvas_budget,
    discover,
    ingest,
    ingest_file,
)
from vc2l_retriever.inputs import Snippet
from vc2l_retriever.render import RenderConfig, render_lines

fpdf = pytest.importorskip("fpdf")
pytest.importorskip("pypdfium2")
pytest.importorskip("selectolax")

SENTENCES = [
    "Vision transformers read rendered text as pixels.",
    "Every snippet becomes one canvas and one vector.",
    "No tokenizer is involved at any stage of the pipeline.",
    "Queries are rendered with the same font as documents.",
]


def paragraph(seed: int, sentences: int = 6) -> str:
    return " ".join(f"{SENTENCES[(seed + i) % len(SENTENCES)]}" for i in range(sentences)) + f" Marker{seed}."


def words(texts: list[str]) -> list[str]:
    return " ".join(texts).split()


def png(path: Path, size: tuple[int, int] = (120, 80), color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


# --------------------------------------------------------------------------------------------------- PDF


def make_text_pdf(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """Page 1: a heading and three paragraphs. Page 2: text, an image with a caption under it, text far below."""
    page1 = [paragraph(0), paragraph(1), paragraph(2)]
    page2 = ["Top of page two. " + paragraph(3, 3), "Caption: the red box above. " + paragraph(4, 3),
             "Bottom of page two. " + paragraph(5, 3)]
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=20)
    pdf.add_page()
    pdf.cell(text="Rendering Text", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=11)
    for text in page1:
        pdf.multi_cell(0, 5, text=text)
        pdf.ln(5)
    pdf.add_page()
    pdf.multi_cell(0, 5, text=page2[0])
    pdf.ln(40)
    pdf.image(png(tmp_path / "red.png"), w=60)
    pdf.multi_cell(0, 5, text=page2[1])
    pdf.ln(60)
    pdf.multi_cell(0, 5, text=page2[2])
    path = tmp_path / "text.pdf"
    pdf.output(str(path))
    return path, ["Rendering Text", *page1], page2


def test_pdf_text_is_packed_per_page_within_budget_without_losing_words(tmp_path: Path) -> None:
    path, page1, page2 = make_text_pdf(tmp_path)
    snippets = ingest_file(path, IngestOptions(max_chars=250))
    assert [s.order for s in snippets] == list(range(len(snippets)))
    assert {s.source for s in snippets} == {str(path.resolve())}
    assert all(len(s.text) <= 250 for s in snippets)
    first = [s.text for s in snippets if s.page == 1]
    second = [s.text for s in snippets if s.page == 2]
    assert len(first) + len(second) == len(snippets) and len(first) >= 3
    assert words(first) == words(page1)
    assert words(second) == words(page2)
    # The 20-pt title is a heading: it starts the first snippet and labels the snippets under it.
    assert first[0].startswith("Rendering Text\n")
    assert snippets[0].metadata["heading"] == "Rendering Text"
    assert snippets[-1].metadata["section"] == ["Rendering Text"]
    assert snippets[0].metadata["page_count"] == 2


def test_pdf_image_is_attached_to_the_nearest_snippet(tmp_path: Path) -> None:
    path, _, _ = make_text_pdf(tmp_path)
    snippets = ingest_file(path, IngestOptions(max_chars=250))
    with_images = [s for s in snippets if s.images]
    assert len(with_images) == 1
    owner = with_images[0]
    assert owner.page == 2 and owner.kind == "text+image"
    assert owner.text.startswith("Caption: the red box above.")
    image = owner.images[0]
    assert isinstance(image, Image.Image) and image.size == (120, 80)
    assert image.getpixel((10, 10)) == (200, 30, 30)
    assert len(owner.metadata["image_boxes"]) == 1


def test_pdf_page_without_text_layer_becomes_page_tiles(tmp_path: Path) -> None:
    scan = Image.new("RGB", (1240, 1754), "white")
    scan.paste((0, 0, 0), (100, 100, 700, 300))  # ink in the top-left of the page only
    scan.save(tmp_path / "scan.png")
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    pdf.multi_cell(0, 5, text=paragraph(0))
    pdf.add_page()
    pdf.image(str(tmp_path / "scan.png"), x=0, y=0, w=210, h=297)
    path = tmp_path / "mixed.pdf"
    pdf.output(str(path))

    snippets = ingest_file(path)
    assert [s.kind for s in snippets if s.page == 1] == ["text"]
    tiles = [s for s in snippets if s.page == 2]
    assert tiles and all(s.kind == "page" and s.text == "" for s in tiles)
    assert all(isinstance(s.images[0], Image.Image) and s.images[0].size == (224, 224) for s in tiles)
    # The page is 672 px wide (3 tiles); ink spans x 54-378 and y 54-161: tiles (band 0, columns 0 and 1).
    assert [(s.metadata["band"], s.metadata["column"]) for s in tiles] == [(0, 0), (0, 1)]
    assert tiles[0].metadata["blank_tiles_skipped"] == 3 * 5 - 2
    assert tiles[0].metadata["tile_box"] == [0, 0, 224, 224]


def test_pdf_encrypted_needs_the_password(tmp_path: Path) -> None:
    pdf = fpdf.FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="Secret quarterly numbers are here.")
    pdf.set_encryption(owner_password="owner", user_password="user")
    path = tmp_path / "locked.pdf"
    pdf.output(str(path))

    with pytest.raises(IngestError) as missing:
        ingest_file(path)
    assert str(missing.value) == f"{path.resolve()}: encrypted PDF: a password is required (IngestOptions.password)"
    with pytest.raises(IngestError, match="wrong password"):
        ingest_file(path, IngestOptions(password="guess"))
    snippets = ingest_file(path, IngestOptions(password="user"))
    assert [s.text for s in snippets] == ["Secret quarterly numbers are here."]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_pdf_broken_files_raise_an_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    good, _, _ = make_text_pdf(tmp_path)
    data = good.read_bytes()
    content = {"truncated": data[: len(data) // 2], "garbage": b"%PDF-1.7 not really", "empty": b""}[damage]
    path = tmp_path / f"{damage}.pdf"
    path.write_bytes(content)
    with pytest.raises(IngestError) as error:
        ingest_file(path)
    assert error.value.source == str(path.resolve())
    assert str(error.value).startswith(f"{path.resolve()}: ")
    assert ("empty" if damage == "empty" else "not a valid PDF") in error.value.reason


def test_pdf_max_pages_limits_pages_and_ten_pages_take_well_under_a_second(tmp_path: Path) -> None:
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=11)
    for page in range(10):
        pdf.add_page()
        for i in range(5):
            pdf.multi_cell(0, 5, text=paragraph(page + i, 8))
            pdf.ln(4)
    path = tmp_path / "ten.pdf"
    pdf.output(str(path))
    start = time.perf_counter()
    snippets = ingest_file(path)
    elapsed = time.perf_counter() - start
    assert {s.page for s in snippets} == set(range(1, 11))
    assert elapsed < 1.0, f"10-page PDF took {elapsed:.2f} s"
    assert {s.page for s in ingest_file(path, IngestOptions(max_pages=2))} == {1, 2}


# --------------------------------------------------------------------------------------------------- HTML


def data_uri(size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (0, 0, 255)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    """A page with boilerplate, headings and every kind of image reference."""
    (tmp_path / "site" / "img").mkdir(parents=True)
    png(tmp_path / "site" / "img" / "red.png")
    png(tmp_path / "secret.png")  # a real image outside the page's folder
    os.symlink(tmp_path / "secret.png", tmp_path / "site" / "img" / "link.png")
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>Rendered Retrieval</title>
<style>.hidden {{ display: none }}</style><script>var tracking = "script junk";</script></head>
<body><header><div>Site banner junk</div><nav><a href="/">Home junk</a></nav></header>
<article><header><h1>Article Title</h1></header>
<p>Intro with <b>bold</b> words and an inline <img src="img/red.png" alt="a red box"> picture.</p>
<h2>Second Section</h2><p>Text of the second section.</p>
<figure><img src="{data_uri((900, 300))}" alt="blue banner"><figcaption>Figure 1: wide blue</figcaption></figure>
<p>Missing <img src="img/missing.png" alt="lost image"> here.</p>
<p>Remote <img src="https://example.com/a.png" alt="remote one"><img src="//cdn.example.com/b.png"> here.</p>
<p>Escapes <img src="../secret.png"><img src="../../../../../../etc/passwd"><img src="img/link.png"> here.</p>
<noscript>Noscript junk</noscript><aside>Aside junk</aside><form>Form junk</form><footer>Footer junk</footer>
</article><footer>Site footer junk</footer></body></html>"""
    path = tmp_path / "site" / "page.html"
    path.write_text(html, encoding="utf-8")
    return path


def test_html_keeps_main_content_and_drops_boilerplate(site: Path) -> None:
    snippets = ingest_file(site)
    text = "\n".join(s.text for s in snippets)
    assert "junk" not in text
    assert "Article Title" in text and "Text of the second section." in text
    assert all(s.metadata["title"] == "Rendered Retrieval" for s in snippets)


def test_html_heading_starts_a_snippet_and_prefixes_it(site: Path) -> None:
    snippets = ingest_file(site, IngestOptions(max_chars=120))
    second = next(s for s in snippets if "Text of the second section." in s.text)
    assert second.text.startswith("Second Section\nText of the second section.")
    assert second.metadata["heading"] == "Second Section"
    assert second.metadata["section"] == ["Article Title", "Second Section"]
    assert all(len(s.text) <= 120 for s in snippets)
    assert snippets[0].text.startswith("Article Title\nIntro with bold words")


def test_html_images_resolved_decoded_or_dropped_with_counts(site: Path) -> None:
    snippets = ingest_file(site, IngestOptions(max_chars=120))
    text = "\n".join(s.text for s in snippets)
    intro = next(s for s in snippets if "Intro with" in s.text)
    assert intro.images == [site.parent / "img" / "red.png"]
    assert "a red box" in intro.text and intro.metadata["alt"] == ["a red box"]

    figure = next(s for s in snippets if "Figure 1: wide blue" in s.text)
    (blue,) = figure.images
    assert isinstance(blue, Image.Image) and blue.size == (448, 149) and blue.getpixel((5, 5)) == (0, 0, 255)
    assert figure.metadata["captions"] == ["Figure 1: wide blue"] and "blue banner" in figure.text

    merged: dict[str, int] = {}
    for s in snippets:
        for key in ("missing_images", "remote_images_skipped", "refused_images"):
            merged[key] = merged.get(key, 0) + s.metadata.get(key, 0)
    assert merged == {"missing_images": 1, "remote_images_skipped": 2, "refused_images": 3}
    # Dropped images keep their text; nothing outside the page's folder was read.
    assert "Missing here.\nlost image\nRemote here.\nremote one\nEscapes here." in text
    assert all(isinstance(i, Image.Image) or i.is_relative_to(site.parent) for s in snippets for i in s.images)
    assert sum(len(s.images) for s in snippets) == 2


def test_html_image_root_widens_what_may_be_read(site: Path) -> None:
    snippets = ingest_file(site, IngestOptions(image_root=site.parent.parent))
    images = [i for s in snippets for i in s.images if isinstance(i, Path)]
    assert site.parent.parent / "secret.png" in images
    assert Path("/etc/passwd") not in images


def test_html_prefers_main_element(tmp_path: Path) -> None:
    path = tmp_path / "main.html"
    path.write_text("<body><div>Outside text</div><main><p>Inside text</p></main><div>More outside</div></body>")
    assert [s.text for s in ingest_file(path)] == ["Inside text"]


def test_html_charset_declared_and_broken(tmp_path: Path) -> None:
    latin = tmp_path / "latin.html"
    latin.write_bytes(b'<meta charset="iso-8859-1"><p>caf\xe9 cr\xe8me</p>')
    (snippet,) = ingest_file(latin)
    assert snippet.text == "café crème" and snippet.metadata["encoding"] == "iso-8859-1"
    broken = tmp_path / "broken.htm"
    broken.write_bytes(b'<meta charset="utf-8"><p>ok \xff\xfe bytes</p>')
    (snippet,) = ingest_file(broken)
    assert snippet.text == "ok \ufffd\ufffd bytes" and snippet.metadata["encoding_errors"] is True
    unknown = tmp_path / "unknown.xhtml"
    unknown.write_bytes(b'<meta charset="klingon-8"><p>plain</p>')
    assert [s.text for s in ingest_file(unknown)] == ["plain"]


def test_html_ten_thousand_nested_tags_do_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.html"
    path.write_text("<body>" + "<div><span>" * 5000 + "deep text" + "</span></div>" * 5000 + "<p>after</p></body>")
    assert [s.text for s in ingest_file(path)] == ["deep text\nafter"]


# --------------------------------------------------------------------------------------------------- text


def test_markdown_headings_keep_their_text_and_long_paragraphs_split_at_sentences(tmp_path: Path) -> None:
    long = paragraph(0, 12)
    path = tmp_path / "notes.md"
    code = "```\n# a comment, not a heading\n```\n"
    path.write_text(f"# Intro\n\nShort first paragraph.\n\n## Details\n{long}\n\n{code}")
    snippets = ingest_file(path, IngestOptions(max_chars=200))
    assert snippets[0].text == "Intro\nShort first paragraph."
    assert snippets[1].text.startswith("Details\nVision transformers")
    assert all(len(s.text) <= 200 for s in snippets)
    assert all(s.text.endswith(".") for s in snippets[:-1])  # cut at sentence ends
    assert words([s.text for s in snippets]) == words(["Intro Short first paragraph. Details", long,
                                                       "# a comment, not a heading"])
    assert snippets[-1].text.endswith("\n# a comment, not a heading") and snippets[-1].metadata["heading"] == "Details"


def test_text_words_longer_than_the_budget_are_cut_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("one two\nthree\n\n" + "x" * 25 + " tail\n")
    snippets = ingest_file(path, IngestOptions(max_chars=10))
    assert [s.text for s in snippets] == ["one two", "three", "xxxxxxxxxx", "xxxxxxxxxx", "xxxxx tail"]
    assert all(s.kind == "text" for s in snippets)


def test_rst_sections_and_image_directive(tmp_path: Path) -> None:
    png(tmp_path / "fig.png")
    path = tmp_path / "guide.rst"
    path.write_text("=====\nGuide\n=====\n\nIntro.\n\nUsage\n-----\n\n.. image:: fig.png\n   :alt: a figure\n\nEnd.\n")
    snippets = ingest_file(path)
    assert [s.text for s in snippets] == ["Guide\nIntro.", "Usage\na figure\nEnd."]
    assert snippets[1].images == [tmp_path / "fig.png"]
    assert snippets[1].metadata["section"] == ["Guide", "Usage"]


# --------------------------------------------------------------------------------------------------- images


def test_image_file_is_one_lazy_image_snippet(tmp_path: Path) -> None:
    path = png(tmp_path / "photo.PNG", size=(64, 32))
    (snippet,) = ingest_file(path)
    assert snippet.images == [path.resolve()] and snippet.kind == "image"
    assert snippet.metadata["width"] == 64 and snippet.metadata["height"] == 32


def test_truncated_png_is_an_error_naming_the_file(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(buffer, "PNG")
    path = tmp_path / "broken.png"
    path.write_bytes(buffer.getvalue()[:400])
    with pytest.raises(IngestError) as error:
        ingest_file(path)
    assert error.value.source == str(path.resolve()) and "not a readable image" in error.value.reason


def test_missing_and_unsupported_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="file not found"):
        ingest_file(tmp_path / "nope.txt")
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(IngestError, match="unsupported file type '.csv'"):
        ingest_file(tmp_path / "data.csv")


def test_ingest_error_pickles_with_its_fields() -> None:
    error = pickle.loads(pickle.dumps(IngestError("/x/a.pdf", "broken")))
    assert (error.source, error.reason, str(error)) == ("/x/a.pdf", "broken", "/x/a.pdf: broken")


# --------------------------------------------------------------------------------------------------- discovery


def test_discover_is_sorted_skips_hidden_and_survives_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.md").write_text("z")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "c.csv").write_text("c")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "h.txt").write_text("h")
    (tmp_path / "b" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "b" / "a.txt").symlink_to(tmp_path / "a.txt")  # the same file again
    found = list(discover([tmp_path, tmp_path / "c.csv"]))
    assert found == [tmp_path / "a.txt", tmp_path / "b" / "z.md", tmp_path / "c.csv"]
    assert list(discover(str(tmp_path / "a.txt"))) == [tmp_path / "a.txt"]


def test_ingest_streams_snippets_and_yields_errors_without_stopping(tmp_path: Path) -> None:
    (tmp_path / "1-good.txt").write_text("first file")
    (tmp_path / "2-bad.pdf").write_bytes(b"garbage")
    (tmp_path / "3-good.md").write_text("# Last\n\nfile")
    items = list(ingest([tmp_path, tmp_path / "missing.html"]))
    assert [type(i).__name__ for i in items] == ["Snippet", "IngestError", "Snippet", "IngestError"]
    assert isinstance(items[0], Snippet) and items[0].text == "first file"
    assert items[1].source == str(tmp_path / "2-bad.pdf")
    assert items[2].text == "Last\nfile" and items[2].source == str(tmp_path / "3-good.md")
    assert str(items[3]) == f"{tmp_path / 'missing.html'}: file not found"


def test_ingest_lets_documents_in_a_folder_use_images_anywhere_in_it(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    png(tmp_path / "shared.png")
    (tmp_path / "docs" / "page.html").write_text('<p>Shared <img src="../shared.png"></p>')
    image_file, snippet = list(ingest([tmp_path]))  # the folder's own files come before its subfolders'
    assert image_file.kind == "image" and snippet.source == str(tmp_path / "docs" / "page.html")
    assert snippet.images == [tmp_path / "shared.png"]
    (alone,) = ingest_file(tmp_path / "docs" / "page.html")
    assert alone.images == [] and alone.metadata["refused_images"] == 1


# --------------------------------------------------------------------------------------------------- budget


def test_canvas_budget_matches_the_canvas() -> None:
    official = RenderConfig(max_chars=10_000)
    full, with_image = canvas_budget(official), canvas_budget(official, reserve_image=True)
    assert 1500 < full < 2500 and with_image < full
    assert canvas_budget(RenderConfig()) == 768  # capped by what the renderer keeps
    compact = RenderConfig(layout="compact", max_rows=8, max_chars=10_000)
    budget = canvas_budget(compact)
    assert canvas_budget(compact, reserve_image=True) == budget
    prose = ("Other prose is measured the same way, with ordinary words and punctuation. " * 10).lower()
    _, rows = render_lines(prose[: int(budget * 0.95)], 9)
    assert rows <= 8


def test_supported_suffixes_cover_the_documented_formats() -> None:
    assert SUPPORTED_SUFFIXES == {".pdf", ".html", ".htm", ".xhtml", ".txt", ".md", ".markdown", ".rst", ".png",
                                  ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def test_remote_images_are_fetched_only_when_allowed(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    big = io.BytesIO()
    Image.new("RGB", (1000, 500), (0, 128, 0)).save(big, "PNG")
    fetched: list[str] = []

    def fetch(url: str) -> bytes:  # stands in for the network, which tests never use
        fetched.append(url)
        return big.getvalue()

    allowed = ImageResolver(page, IngestOptions(fetch_remote=True), fetch=fetch)
    image, dropped = allowed.resolve("//cdn.example.com/a.png")
    assert fetched == ["https://cdn.example.com/a.png"] and dropped is None
    assert isinstance(image, Image.Image) and image.size == (448, 224)
    assert ImageResolver(page, IngestOptions(), fetch=fetch).resolve("http://x/a.png") == (
        None, "remote_images_skipped")
    assert len(fetched) == 1


def test_download_is_capped_in_size(tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"x" * 2048)
    resolver = ImageResolver(tmp_path / "page.html", IngestOptions(max_remote_bytes=1024))
    with pytest.raises(ValueError, match="larger than 1024 bytes"):
        resolver._download(blob.as_uri())  # a file:// URL exercises the real urllib path without a network


def test_truncated_local_image_is_dropped_from_html(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((128, 128), 64).convert("RGB").save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[:300])
    (tmp_path / "page.html").write_text('<p>Text stays <img src="cut.png" alt="cut"></p>')
    (snippet,) = ingest_file(tmp_path / "page.html")
    assert snippet.images == [] and snippet.metadata["invalid_images"] == 1
    assert snippet.text == "Text stays\ncut"
