"""Issue 15: indexing stays inside the folder it was given, and a lying file cannot make it work forever.

A folder of good documents plus hostile ones (symlinks to a file and a folder outside, a symlink loop, an image
linked from outside, a PDF whose page tree claims a million pages, a PDF with thousands of broken pages) goes
through ``ingest()``, the real index (micro model, embedded Qdrant in ``tmp_path``) and ``vc2l index``: the good
documents are indexed, nothing outside the folder is, every skipped item is named with its reason, the run ends
in seconds and each bad file logs a handful of lines. ``follow_symlinks`` / ``--follow-symlinks`` lets links out.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

import vc2l_retriever
from tests.hostile import BROKEN_PAGES, LYING_COUNT, SECRET, pdf_claiming_pages, pdf_with_broken_pages
from vc2l_retriever.ingest import IngestError, IngestOptions, ingest, ingest_file, iter_file
from vc2l_retriever.inputs import Snippet

fpdf = pytest.importorskip("fpdf")
pytest.importorskip("pypdfium2")
pytest.importorskip("selectolax")

OUTSIDE = "symlink resolves outside the folder being indexed"
GOOD = ["fig.png", "good.txt", "guide.md", "page.html", "report.pdf"]


def text_pdf(path: Path, pages: int) -> Path:
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=12)
    for i in range(pages):
        pdf.add_page()
        pdf.cell(text=f"page {i + 1} of the quarterly report on solar panel cleaning")
    pdf.output(str(path))
    return path


def drawn_pdf(path: Path, pages: int) -> Path:
    """Pages without a text layer: each is rendered and tiled, a few milliseconds of work a page."""
    pdf = fpdf.FPDF()
    for i in range(pages):
        pdf.add_page()
        pdf.rect(20, 20 + i % 50, 100, 60, style="F")
    pdf.output(str(path))
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """``tmp_path/docs``: five good documents and the hostile cases; ``tmp_path/outside`` holds the secrets."""
    outside, docs = tmp_path / "outside", tmp_path / "docs"
    (outside / "etc").mkdir(parents=True)
    docs.mkdir()
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    (outside / "etc" / "leak.md").write_text(f"# Leaked\n\n{SECRET}", encoding="utf-8")
    Image.new("RGB", (48, 48), (200, 0, 0)).save(outside / "pic.png")
    Image.new("RGB", (48, 48), (0, 90, 200)).save(docs / "fig.png")
    (docs / "good.txt").write_text("Solar panels should be cleaned twice a year.", encoding="utf-8")
    (docs / "guide.md").write_text("# Inverters\n\nReset the inverter after a storm.", encoding="utf-8")
    (docs / "page.html").write_text('<p>Our roof <img src="fig.png"> and a linked one <img src="linked.png"></p>',
                                    encoding="utf-8")
    text_pdf(docs / "report.pdf", 3)
    (docs / "passwd.txt").symlink_to(outside / "secret.txt")  # the "passwd.txt -> /etc/passwd"
    (docs / "etc").symlink_to(outside / "etc", target_is_directory=True)
    (docs / "linked.png").symlink_to(outside / "pic.png")
    (docs / "loop_a.txt").symlink_to("loop_b.txt")
    (docs / "loop_b.txt").symlink_to("loop_a.txt")
    (docs / "count_million.pdf").write_bytes(pdf_claiming_pages(LYING_COUNT))
    (docs / "broken_3000.pdf").write_bytes(pdf_with_broken_pages(BROKEN_PAGES + 1, lambda i: i == 1))
    return docs


def stopped(pages: int) -> str:
    return (f"stopped after 20 consecutive pages failed to load (max_failed_pages): read 1 of {pages:,} pages; "
            f"pages 2–21 failed to load: Failed to load page; pages 22–{pages:,} not read")


def expected_reasons(docs: Path) -> dict[str, str]:
    """What ``ingest()`` says about each hostile entry (the index differs where it opens a file first)."""
    outside = docs.parent / "outside"
    hint = "follow_symlinks=True or --follow-symlinks allows it"
    return {
        str(docs / "passwd.txt"): f"{OUTSIDE} ({outside / 'secret.txt'} is not in {docs}; {hint})",
        str(docs / "etc"): f"{OUTSIDE} ({outside / 'etc'} is not in {docs}; {hint})",
        str(docs / "linked.png"): f"{OUTSIDE} ({outside / 'pic.png'} is not in {docs}; {hint})",
        str(docs / "loop_a.txt"): "symlink loop (too many levels of symbolic links)",
        str(docs / "loop_b.txt"): "symlink loop (too many levels of symbolic links)",
        str(docs / "count_million.pdf"): stopped(LYING_COUNT),
        str(docs / "broken_3000.pdf"): stopped(BROKEN_PAGES + 1),
    }


def lines_per_file(records: list[logging.LogRecord], docs: Path) -> Counter[str]:
    names = sorted((p.name for p in docs.iterdir()), key=len, reverse=True)  # a longer name claims its lines first
    counts: Counter[str] = Counter()
    for record in records:
        message = record.getMessage()
        counts[next((n for n in names if str(docs / n) in message), "(other)")] += 1
    return counts


# --------------------------------------------------------------------------------------------------- ingest()


def test_ingest_reads_the_good_documents_and_names_every_refused_or_stopped_entry_in_seconds(
        folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    start = time.perf_counter()
    with caplog.at_level(logging.INFO):
        items = list(ingest([folder]))
    elapsed = time.perf_counter() - start
    errors = {e.source: e.reason for e in items if isinstance(e, IngestError)}
    snippets = [s for s in items if isinstance(s, Snippet)]
    assert errors == expected_reasons(folder)
    # The stopped PDFs keep the page they read; nothing read comes from outside the folder.
    assert sorted({Path(s.source).name for s in snippets}) == sorted(GOOD + ["broken_3000.pdf", "count_million.pdf"])
    assert not any(SECRET in s.text for s in snippets)
    (page,) = [s for s in snippets if s.source.endswith("page.html")]
    assert page.images == [folder / "fig.png"] and page.metadata["refused_images"] == 1
    assert elapsed < 10, f"{elapsed:.1f} s"
    lines = lines_per_file(caplog.records, folder)
    assert lines.pop("(other)", 0) == 0 and max(lines.values()) == 1, lines


def test_a_path_named_explicitly_is_read_as_given_even_through_a_symlink(folder: Path) -> None:
    (snippet,) = ingest([folder / "passwd.txt"])  # the user named it: the rule covers what is *found*
    assert snippet.text == SECRET and snippet.source == str(folder / "passwd.txt")
    (leak,) = ingest([folder / "etc"])  # a folder argument that is a symlink is walked where it points
    assert leak.text == f"Leaked\n{SECRET}"


def test_follow_symlinks_reads_files_folders_and_images_the_links_point_to(folder: Path) -> None:
    items = list(ingest([folder], IngestOptions(follow_symlinks=True)))
    texts = {Path(i.source).relative_to(folder).as_posix(): i.text for i in items if isinstance(i, Snippet)}
    assert texts["passwd.txt"] == SECRET and texts["etc/leak.md"] == f"Leaked\n{SECRET}"
    (page,) = [i for i in items if isinstance(i, Snippet) and i.source.endswith("page.html")]
    assert page.images == [folder / "fig.png", folder.parent / "outside" / "pic.png"]
    errors = sorted(Path(i.source).name for i in items if isinstance(i, IngestError))
    assert errors == ["broken_3000.pdf", "count_million.pdf", "loop_a.txt", "loop_b.txt"]  # loops stay refused


def test_following_links_never_climbs_out_through_a_link_to_a_folder_holding_the_root(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("inside", encoding="utf-8")
    (tmp_path / "elsewhere.txt").write_text("outside", encoding="utf-8")
    (docs / "sub" / "up").symlink_to("../..", target_is_directory=True)  # -> tmp_path, which holds docs
    (docs / "sub" / "self").symlink_to("..", target_is_directory=True)  # -> docs itself: walked once
    for follow, reason in ((False, OUTSIDE), (True, f"symlink loop ({tmp_path} contains the folder being indexed)")):
        items = list(ingest([docs], IngestOptions(follow_symlinks=follow)))
        assert [i.text for i in items if isinstance(i, Snippet)] == ["inside"]
        (error,) = [i for i in items if isinstance(i, IngestError)]
        assert error.source == str(docs / "sub" / "up") and error.reason.startswith(reason)


def test_image_links_out_of_the_folder_follow_the_option_but_dot_dot_paths_never_leave(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    Image.new("RGB", (48, 48), (0, 200, 0)).save(tmp_path / "outside" / "pic.png")
    site = tmp_path / "site"
    site.mkdir()
    (site / "linked.png").symlink_to(tmp_path / "outside" / "pic.png")
    (site / "page.md").write_text("![a](linked.png) ![b](../outside/pic.png) two figures", encoding="utf-8")
    (refused,) = ingest_file(site / "page.md")
    assert refused.images == [] and refused.metadata["refused_images"] == 2
    (allowed,) = ingest_file(site / "page.md", IngestOptions(follow_symlinks=True))
    assert allowed.images == [tmp_path / "outside" / "pic.png"] and allowed.metadata["refused_images"] == 1


def test_the_langchain_loader_and_the_llamaindex_reader_keep_the_same_rule(folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from vc2l_retriever.integrations.langchain import VC2LDocumentLoader
    from vc2l_retriever.integrations.llamaindex import VC2LReader

    refused = sorted(Path(item).name for item in expected_reasons(folder))
    loader = VC2LDocumentLoader([folder], image_dir=tmp_path / "lc")
    texts = [d.page_content for d in loader.lazy_load()]
    assert texts and not any(SECRET in t for t in texts)
    assert sorted(Path(e.source).name for e in loader.errors) == refused
    reader = VC2LReader(image_dir=tmp_path / "li")
    texts = [d.text for d in reader.lazy_load_data([folder])]
    assert texts and not any(SECRET in t for t in texts)
    assert sorted(Path(e.source).name for e in reader.errors) == refused
    allowed = VC2LDocumentLoader([folder], options=IngestOptions(follow_symlinks=True), image_dir=tmp_path / "lc")
    assert SECRET in [d.page_content for d in allowed.lazy_load()]


# --------------------------------------------------------------------------------------------------- time and logs


def test_the_time_budget_stops_a_pdf_between_pages_and_the_batch_goes_on(tmp_path: Path) -> None:
    long_pdf = drawn_pdf(tmp_path / "a_long.pdf", 2000)  # about 10 s of work in all
    (tmp_path / "b_next.txt").write_text("the next file is still read", encoding="utf-8")
    start = time.perf_counter()
    items = list(ingest([tmp_path], IngestOptions(max_file_seconds=0.2)))
    elapsed = time.perf_counter() - start
    *pages, error, last = items
    assert isinstance(error, IngestError) and error.source == str(long_pdf)
    match = re.fullmatch(r"stopped after the time budget of 0\.2 s per file \(max_file_seconds\): "
                         r"read (\d+) of 2000 pages; pages (\d+)–2000 not read", error.reason.replace(",", ""))
    assert match, error.reason
    read = int(match[1])
    assert 0 < read < 2000 and int(match[2]) == read + 1
    assert sorted({s.page for s in pages}) == list(range(1, read + 1))  # every page read until the stop, in order
    assert isinstance(last, Snippet) and last.text == "the next file is still read"
    assert elapsed < 3, f"{elapsed:.1f} s"


def test_time_the_caller_spends_between_snippets_does_not_count_against_the_file(tmp_path: Path) -> None:
    path = text_pdf(tmp_path / "ten.pdf", 10)
    pages = []
    for snippet in iter_file(path, IngestOptions(max_file_seconds=0.25)):
        time.sleep(0.05)  # a consumer embedding each snippet: 0.5 s in all, twice the file's budget
        pages.append(snippet.page)
    assert pages == list(range(1, 11))


def test_an_html_page_with_thousands_of_bad_images_logs_one_line_and_stops_at_the_time_budget(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Image.new("RGB", (40, 40), (9, 9, 9)).save(tmp_path / "fig.png")
    (tmp_path / "refused.html").write_text("<p>x" + '<img src="../../etc/passwd">' * 5000 + "</p>", encoding="utf-8")
    with caplog.at_level(logging.INFO):
        (snippet,) = ingest_file(tmp_path / "refused.html")
    assert snippet.metadata["refused_images"] == 5000
    assert [r.getMessage().split(": ../")[0] for r in caplog.records] == [f"{tmp_path / 'refused.html'}: 5,000 "
                                                                         "images refused"]
    assert caplog.records[0].getMessage().endswith("; and 4,997 more")
    (tmp_path / "many.html").write_text("<p>x" + '<img src="fig.png">' * 3000 + "</p>", encoding="utf-8")
    with pytest.raises(IngestError, match=r"^.*many\.html: stopped after the time budget of 0\.01 s per file "
                                          r"\(max_file_seconds\); [\d,]+ images resolved$"):
        ingest_file(tmp_path / "many.html", IngestOptions(max_file_seconds=0.01))


def test_bounds_have_documented_defaults_and_refuse_nonsense() -> None:
    options = IngestOptions()
    assert (options.max_pages, options.max_failed_pages, options.max_file_seconds) == (2000, 20, 120.0)
    assert (options.follow_symlinks, options.root) == (False, None)
    for bad in ({"max_failed_pages": 0}, {"max_file_seconds": 0}, {"max_file_seconds": -1.0}):
        with pytest.raises(ValueError):
            IngestOptions(**bad)


# --------------------------------------------------------------------------------------------------- index


def _point_counts(store: object, docs: Path) -> dict[str, int]:
    """Points per file name, for every entry of ``docs`` and the file behind its ``etc`` link."""
    paths = [*docs.iterdir(), docs / "etc" / "leak.md"]
    counts = {p.name: store.count(source=str(p)) for p in paths}  # type: ignore[attr-defined]
    return {name: n for name, n in counts.items() if n}


def test_the_index_takes_the_good_documents_only_and_names_each_skipped_item_in_seconds(
        micro_model: vc2l_retriever.VC2LSentenceTransformer, folder: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from vc2l_retriever.integrations.qdrant import VC2LQdrant

    start = time.perf_counter()
    with caplog.at_level(logging.INFO), VC2LQdrant(micro_model, path=tmp_path / "index", batch_size=16) as store:
        report = store.index([folder])
        counts, total = _point_counts(store, folder), store.count()
    elapsed = time.perf_counter() - start
    assert sorted(counts) == GOOD and sum(counts.values()) == total  # nothing from outside, nothing else
    assert counts["report.pdf"] == 3
    expected = expected_reasons(folder)  # the index asks the containment rule before it opens anything
    assert dict(report.skipped) == expected and len(report.skipped) == len(expected)
    summary = report.summary()
    for item, reason in expected.items():
        assert f"  skipped {item}: {reason}" in summary
    assert elapsed < 30, f"{elapsed:.1f} s"
    lines = lines_per_file(caplog.records, folder)
    lines.pop("(other)", None)
    assert max(lines.values()) <= 2, lines


def test_vc2l_index_refuses_links_out_by_default_and_follows_them_with_the_flag(
        micro_model_dir: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vc2l_retriever.cli import main

    model = ["--model", str(micro_model_dir)]
    strict, loose = str(tmp_path / "strict"), str(tmp_path / "loose")
    assert main(["index", str(folder), "--index", strict, *model]) == 0
    out = capsys.readouterr().out
    assert f"  skipped {folder / 'passwd.txt'}: {OUTSIDE}" in out and "7 skipped" in out
    assert main(["search", SECRET, "--index", strict, *model, "--json", "--limit", "20"]) == 0
    assert not any("root:x:0:0" in hit["text"] for hit in json.loads(capsys.readouterr().out))
    assert main(["index", str(folder), "--index", loose, *model, "--follow-symlinks"]) == 0
    out = capsys.readouterr().out
    assert "passwd.txt" not in out and "4 skipped" in out  # the two stopped PDFs and the loop remain
    assert main(["search", SECRET, "--index", loose, *model, "--json", "--limit", "1"]) == 0
    (hit,) = json.loads(capsys.readouterr().out)
    assert hit["text"] == SECRET and hit["score"] == pytest.approx(1, abs=1e-4)


def test_the_index_passes_follow_symlinks_through_ingest_options(
        micro_model: vc2l_retriever.VC2LSentenceTransformer, folder: Path, tmp_path: Path) -> None:
    from vc2l_retriever.index import default_ingest_options
    from vc2l_retriever.integrations.qdrant import VC2LQdrant

    options = replace(default_ingest_options(micro_model), follow_symlinks=True)
    with VC2LQdrant(micro_model, path=tmp_path / "index", batch_size=16) as store:
        report = store.index([folder], options=options)
        counts = _point_counts(store, folder)
    assert counts["passwd.txt"] == 1 and counts["leak.md"] == 1 and counts["linked.png"] == 1
    assert sorted(Path(item).name for item, _ in report.skipped) == ["broken_3000.pdf", "count_million.pdf",
                                                                     "loop_a.txt", "loop_b.txt"]
