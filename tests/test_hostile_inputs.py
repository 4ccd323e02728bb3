"""Hostile inputs: broken, malicious and odd files (``tests/hostile.py`` writes them) never stop a batch.

Every bad file gets one error naming it, with a reason from a small set of categories; every good file is read;
a PDF stopped part-way yields its good pages, then one error; what is never reached (FIFOs, dangling links,
unsupported suffixes) is never touched, and nothing a symlink points to outside the folder is read. The index
tests run the same corpus through the real indexer and the ``vc2l index`` command with the micro model.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import tracemalloc
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.hostile import (
    BIG_TEXT_BYTES,
    BROKEN_PAGES,
    EMPTY,
    ERROR,
    IGNORED,
    LYING_COUNT,
    NEEDS_PASSWORD,
    NO_PAGES,
    OK,
    PARTIAL,
    PDF_PAGES,
    SECRET,
    TOO_LARGE,
    Case,
    build_corpus,
    outside_folder,
)
from vc2l_retriever.ingest import IngestError, IngestOptions, discover, ingest, ingest_file
from vc2l_retriever.inputs import MAX_IMAGE_PIXELS, InputError, Snippet, open_image

pytest.importorskip("fpdf")
pytest.importorskip("pypdfium2")
pytest.importorskip("selectolax")

MAX_PAGES = 50  # over max_failed_pages (20), so the PDFs with a lying page count are stopped, not just capped
Outcome = tuple[list[Snippet], list[IngestError]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case]]:
    root = tmp_path_factory.mktemp("hostile").resolve()
    return root, build_corpus(root)


def source(root: Path, case: Case) -> str:
    return os.path.abspath(root / case.name)


def outcomes(items: list[Snippet | IngestError]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = defaultdict(lambda: ([], []))
    for item in items:
        if isinstance(item, IngestError):
            out[item.source][1].append(item)
        else:
            out[item.source][0].append(item)
    return dict(out)


@pytest.fixture(scope="module")
def ingested(corpus: tuple[Path, list[Case]]) -> dict[str, Outcome]:
    root, _ = corpus
    return outcomes(list(ingest([root], IngestOptions(max_pages=MAX_PAGES))))


def test_the_corpus_has_over_forty_cases_across_every_input_kind(corpus: tuple[Path, list[Case]]) -> None:
    _, cases = corpus
    kinds = defaultdict(int)
    for case in cases:
        kinds[case.name.split("/")[0]] += 1
    assert len(cases) >= 40
    assert kinds["images"] >= 20 and kinds["pdf"] >= 10 and kinds["html"] >= 10 and kinds["text"] >= 10
    assert kinds["fs"] >= 12
    assert {case.expect for case in cases} == {OK, EMPTY, ERROR, IGNORED, PARTIAL}


def test_ingest_names_every_bad_file_once_and_reads_every_good_one(corpus: tuple[Path, list[Case]],
                                                                    ingested: dict[str, Outcome]) -> None:
    root, cases = corpus
    expected_errors = {source(root, c): c for c in cases if c.expect in (ERROR, PARTIAL)}
    got_errors = {src for src, (_, errors) in ingested.items() if errors}
    assert got_errors == set(expected_errors)
    for src, case in expected_errors.items():
        snippets, errors = ingested[src]
        assert len(errors) == 1 and bool(snippets) == (case.expect == PARTIAL), case.name
        assert case.reason in errors[0].reason, (case.name, errors[0].reason)
        assert str(errors[0]) == f"{src}: {errors[0].reason}"
    for case in cases:
        snippets, errors = ingested.get(source(root, case), ([], []))
        if case.expect == OK:
            assert snippets and not errors, case.name
            if case.reason:  # a dropped part must be counted where the caller can see it
                assert any(s.metadata.get(case.reason) for s in snippets), (case.name, case.reason)
        elif case.expect in (EMPTY, IGNORED):
            assert snippets == [] and errors == [], case.name
    # Nothing outside the listed files was read: loops and links did not yield a file twice under another name.
    assert set(ingested) <= {source(root, c) for c in cases}


def test_error_reasons_fall_into_a_few_documented_categories(ingested: dict[str, Outcome]) -> None:
    reasons = {errors[0].reason.split(" (")[0] for _, errors in ingested.values() if errors}
    assert reasons == {
        "not a readable image", "empty file", "encrypted PDF: a password is required", "not a valid PDF",
        "PDF has no pages", "no page could be read", "file is larger than max_file_bytes",
        "symlink resolves outside the folder being indexed", "symlink loop",
        "stopped after 20 consecutive pages failed to load",
    }


def test_pdf_pages_are_capped_by_max_pages_and_all_two_thousand_read_without_a_cap(
        corpus: tuple[Path, list[Case]], ingested: dict[str, Outcome]) -> None:
    root, _ = corpus
    path = root / "pdf" / "pages_2000.pdf"
    capped, _ = ingested[str(path)]
    assert [s.page for s in capped] == list(range(1, MAX_PAGES + 1))
    assert capped[0].metadata["page_count"] == PDF_PAGES
    start = time.perf_counter()
    pages = [s.page for s in ingest_file(path)]
    elapsed = time.perf_counter() - start
    assert pages == list(range(1, PDF_PAGES + 1))
    assert elapsed < 15, f"{PDF_PAGES} pages took {elapsed:.1f} s"


def test_a_page_tree_that_lies_about_its_size_keeps_the_real_page(ingested: dict[str, Outcome],
                                                                    corpus: tuple[Path, list[Case]]) -> None:
    root, _ = corpus
    snippets, _ = ingested[str(root / "pdf" / "count_lies.pdf")]
    assert [(s.page, s.text) for s in snippets] == [(1, "only this page exists in the file")]


@pytest.mark.parametrize("name, pages", [("count_million.pdf", LYING_COUNT), ("broken_3000.pdf", BROKEN_PAGES + 1)])
@pytest.mark.parametrize("max_pages", [2000, None])
def test_a_pdf_whose_pages_fail_in_a_run_is_read_then_stopped_in_seconds_naming_what_was_read(
        corpus: tuple[Path, list[Case]], name: str, pages: int, max_pages: int | None) -> None:
    root, _ = corpus
    path = root / "pdf" / name
    start = time.perf_counter()
    items = list(ingest([path], IngestOptions(max_pages=max_pages)))  # no page cap: the run of failures stops it
    elapsed = time.perf_counter() - start
    assert [type(i).__name__ for i in items] == ["Snippet", "IngestError"]
    assert items[0].page == 1 and items[0].metadata["page_count"] == pages
    assert items[1].reason == (
        f"stopped after 20 consecutive pages failed to load (max_failed_pages): read 1 of {pages:,} pages; "
        f"pages 2–21 failed to load: Failed to load page; pages 22–{pages:,} not read")
    assert elapsed < 5, f"{name} took {elapsed:.1f} s"


def test_broken_pages_that_never_fail_twenty_in_a_row_are_skipped_in_one_log_line(
        corpus: tuple[Path, list[Case]], caplog: pytest.LogCaptureFixture) -> None:
    root, _ = corpus
    path = root / "pdf" / "broken_interleaved.pdf"
    with caplog.at_level(logging.WARNING):
        snippets = ingest_file(path)
    assert [s.page for s in snippets] == list(range(1, 2001, 20))
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: pages 2–20, 22–40, 42–60, 62–80 and 96 more ranges failed to load: Failed to load page; "
        "100 of 2,000 pages read"]


def test_a_hostile_file_logs_a_handful_of_lines(corpus: tuple[Path, list[Case]],
                                                caplog: pytest.LogCaptureFixture) -> None:
    root, cases = corpus
    folders = [root / "pdf", root / "html", root / "fs"]
    with caplog.at_level(logging.INFO):
        list(ingest(folders, IngestOptions(max_pages=MAX_PAGES)))
    lines: dict[str, int] = defaultdict(int)
    for record in caplog.records:
        message = record.getMessage()
        (case,) = [c for c in cases if message.startswith(source(root, c) + ":")]  # every line names its file
        lines[case.name] += 1
    assert max(lines.values()) <= 2, lines
    for name in ("pdf/count_million.pdf", "pdf/broken_3000.pdf", "fs/passwd.txt", "fs/outside_dir", "fs/loop_a.txt",
                 "html/img_escape.html"):
        assert lines[name] == 1, name
    assert lines["pdf/broken_interleaved.pdf"] == 2  # its 38 failed pages, and the page cap


def test_nothing_a_symlink_points_to_outside_the_folder_is_read_unless_allowed(
        corpus: tuple[Path, list[Case]], ingested: dict[str, Outcome]) -> None:
    root, _ = corpus
    outside = str(outside_folder(root))
    snippets = [s for found, _ in ingested.values() for s in found]
    assert not any(SECRET in s.text or any(str(i).startswith(outside) for i in s.images) for s in snippets)
    (linked,) = ingested[str(root / "html" / "img_link.html")][0]
    assert linked.images == [] and linked.metadata["refused_images"] == 1
    allowed = outcomes(list(ingest([root / "fs", root / "html"], IngestOptions(follow_symlinks=True))))
    assert [s.text for s in allowed[str(root / "fs" / "passwd.txt")][0]] == [SECRET]
    assert [s.text for s in allowed[str(root / "fs" / "outside_dir" / "leak.md")][0]] == [f"Leaked\n{SECRET}"]
    (linked,) = allowed[str(root / "html" / "img_link.html")][0]
    assert linked.images == [Path(outside) / "pic.png"]
    assert [e.reason for e in allowed[str(root / "fs" / "loop_a.txt")][1]] == ["symlink loop (too many levels "
                                                                                "of symbolic links)"]


def test_encrypted_pdf_opens_with_its_password_and_names_a_wrong_one(corpus: tuple[Path, list[Case]]) -> None:
    root, _ = corpus
    locked = root / "pdf" / "locked.pdf"
    assert [s.text for s in ingest_file(locked, IngestOptions(password="u"))] == ["secret numbers for the board"]
    with pytest.raises(IngestError, match="wrong password"):
        ingest_file(locked, IngestOptions(password="guess"))


def test_a_pdf_without_pages_is_not_reported_as_encrypted_after_a_password_error(
        corpus: tuple[Path, list[Case]]) -> None:
    # pdfium's last-error code is stale for a document that loads with no pages; the reason must not be
    # inherited from the previous (encrypted) file.
    root, _ = corpus
    items = list(ingest([root / "pdf" / "locked.pdf", root / "pdf" / "no_pages.pdf"]))
    assert [e.reason.split(" (")[0] for e in items] == ["encrypted PDF: a password is required", NO_PAGES]
    assert NEEDS_PASSWORD in items[0].reason


def test_corrupt_embedded_pdf_images_are_skipped_and_counted_while_the_text_stays(
        corpus: tuple[Path, list[Case]], ingested: dict[str, Outcome]) -> None:
    root, _ = corpus
    caption = "The chart below is damaged but this caption survives."
    (header,), _ = ingested[str(root / "pdf" / "corrupt_image_header.pdf")]
    assert header.text == caption and header.images == [] and header.metadata["images_skipped"] == 1
    # Damaged pixel data still decodes (libjpeg fills in noise): the image is kept, like any other.
    (data,), _ = ingested[str(root / "pdf" / "corrupt_image_data.pdf")]
    assert data.text == caption and len(data.images) == 1 and "images_skipped" not in data.metadata


@pytest.mark.parametrize("name", ["bomb_10G.png", "bomb_81M.png", "sparse_100M.png"])
def test_image_bombs_are_refused_before_any_pixel_is_decoded(corpus: tuple[Path, list[Case]], name: str) -> None:
    root, _ = corpus
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(InputError) as error:
        open_image(root / "images" / name)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert str(root / "images" / name) in str(error.value)
    assert elapsed < 1.0 and peak < 8 * 1024 * 1024, (elapsed, peak)  # an 81 Mpx decode would need 243 MB


def test_odd_images_are_decoded_to_rgb_within_the_pixel_limit(corpus: tuple[Path, list[Case]]) -> None:
    root, cases = corpus
    good = [c for c in cases if c.name.startswith("images/") and c.expect == OK]
    assert len(good) >= 10
    for case in good:
        image = open_image(root / case.name)
        assert image.mode == "RGB" and 0 < image.width * image.height <= MAX_IMAGE_PIXELS, case.name


def test_ten_megabytes_of_text_keep_every_word_within_the_snippet_budget(corpus: tuple[Path, list[Case]],
                                                                          ingested: dict[str, Outcome]) -> None:
    root, _ = corpus
    path = root / "text" / "big_10MB.txt"
    snippets, _ = ingested[str(path)]
    budget = IngestOptions().max_chars
    assert all(0 < len(s.text) <= budget for s in snippets)
    assert len(snippets) >= BIG_TEXT_BYTES // budget
    original = path.read_text(encoding="utf-8").split()
    assert sum(len(s.text.split()) for s in snippets) == len(original)
    assert [s.order for s in snippets] == list(range(len(snippets)))


def test_unicode_edge_cases_keep_their_text_and_embed_to_finite_unit_vectors(
        corpus: tuple[Path, list[Case]], ingested: dict[str, Outcome], micro_model: object) -> None:
    root, _ = corpus
    names = ["controls.txt", "nul.txt", "surrogates_wtf8.txt", "surrogate_utf16.txt", "astral.md", "rtl.txt",
             "random_bytes.txt"]
    snippets = [s for name in names for s in ingested[str(root / "text" / name)][0]]
    texts = " ".join(s.text for s in snippets)
    assert "\U0001f600" in texts and "\U00020000" in texts  # astral characters survive ingestion
    assert "\u05e9\u05dc\u05d5\u05dd" in texts and "\u202e" in texts  # RTL text and bidi controls are kept
    assert "\ufffd" in texts  # undecodable bytes became replacement characters, not an error
    # Lone surrogates in a str (not from a file) also render: the renderer draws them as blank cells.
    extra = ["lone \ud800 high \udfff low", "\x00\x01\x1b[31m", "\u202e\u0645\u0631\u062d\u0628\u0627"]
    vectors = micro_model.encode(snippets + extra, convert_to_numpy=True)  # type: ignore[attr-defined]
    assert vectors.shape[0] == len(snippets) + len(extra)
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_html_image_references_are_confined_to_the_folder_and_never_fetched(corpus: tuple[Path, list[Case]],
                                                                            ingested: dict[str, Outcome]) -> None:
    root, _ = corpus

    def counts(name: str) -> tuple[int, dict[str, int]]:
        (snippet,) = ingested[str(root / "html" / name)][0]
        keys = ("refused_images", "remote_images_skipped", "missing_images", "invalid_images")
        return len(snippet.images), {k: snippet.metadata[k] for k in keys if k in snippet.metadata}

    assert counts("img_escape.html") == (0, {"refused_images": 4})
    assert counts("img_remote.html") == (0, {"remote_images_skipped": 3})
    assert counts("img_missing.html") == (0, {"missing_images": 2})
    assert counts("img_bad.html") == (0, {"invalid_images": 3})
    assert counts("img_good.html") == (1, {})


def test_fifos_dangling_links_and_loops_are_never_opened_by_the_walk(corpus: tuple[Path, list[Case]]) -> None:
    root, _ = corpus
    found = list(discover(root / "fs"))
    names = [str(p.relative_to(root)) for p in found]
    assert len(names) == len(set(names)) == 5
    assert "fs/sub/inner.txt" in names
    assert not any(word in n for n in names for word in ("fifo", "loop", "self", "passwd", "outside"))
    # Named explicitly, they are reported instead (and a FIFO is never read, so this does not block).
    fs = root / "fs"
    errors = list(ingest([fs / "fifo.txt", fs / "dangling.png", fs / "loop_a.txt"]))
    assert [e.reason for e in errors] == ["not a regular file", "file not found",
                                          "symlink loop (too many levels of symbolic links)"]
    # Entering the loop itself walks the folder it points to once, refusing the same links on the way.
    items = list(ingest([fs / "sub" / "loop"]))
    refused = [i for i in items if isinstance(i, IngestError) and "symlink" in i.reason]
    assert sorted(os.path.basename(i.source) for i in refused) == ["loop_a.txt", "loop_b.txt", "outside_dir",
                                                                   "passwd.txt"]
    assert {os.path.realpath(i.source) for i in items if i not in refused} == {os.path.realpath(p) for p in found}


# --------------------------------------------------------------------------------------------------- index

def _index_ready() -> bool:
    try:
        from vc2l_retriever.integrations.qdrant import VC2LQdrant  # noqa: F401
    except ImportError:
        return False
    return True


needs_index = pytest.mark.skipif(not _index_ready(), reason="needs qdrant-client (vc2l-retriever[qdrant])")
SMALL_FILES = 256 * 1024  # the index tests refuse the 1 MB and 10 MB texts instead of encoding 40,000 snippets


def expected_skips(root: Path, cases: list[Case]) -> dict[str, str]:
    """Every bad file, and every PDF stopped part-way (the index takes a file whole or not at all)."""
    skips = {source(root, c): c.reason for c in cases if c.expect in (ERROR, PARTIAL)}
    for name in ("text/big_10MB.txt", "text/one_word_1MB.txt"):
        skips[os.path.abspath(root / name)] = TOO_LARGE
    return skips


@needs_index
def test_indexing_the_corpus_lists_each_skipped_file_and_gives_every_good_file_points(
        corpus: tuple[Path, list[Case]], micro_model_dir: Path, tmp_path: Path) -> None:
    import vc2l_retriever
    from vc2l_retriever.index import default_ingest_options, json_safe
    from vc2l_retriever.integrations.qdrant import VC2LQdrant

    root, cases = corpus
    model = vc2l_retriever.load(micro_model_dir, device="cpu")
    options = replace(default_ingest_options(model), max_pages=MAX_PAGES, max_file_bytes=SMALL_FILES)
    with VC2LQdrant(model, path=tmp_path / "index", batch_size=64) as store:
        report = store.index([root], options=options)
        points = list(store.store.scroll(keys=["metadata.source"]))
    skipped = dict(report.skipped)
    expected = expected_skips(root, cases)
    assert len(report.skipped) == len(skipped) == len(expected)  # one entry per bad file, no snippet failures
    assert set(skipped) == set(expected)
    for src, category in expected.items():
        assert category in skipped[src], (src, skipped[src])
    per_source = defaultdict(int)
    for point in points:
        per_source[point.payload["metadata"]["source"]] += 1
    good = {source(root, c) for c in cases if c.expect == OK} - set(expected)
    # A file name that is not UTF-8 is stored with its bad bytes as \xNN escapes (JSON payloads need UTF-8).
    assert set(per_source) == {json_safe(g) for g in good}  # every good file got points; nothing else did
    assert per_source[str(root / "pdf" / "pages_2000.pdf")] == MAX_PAGES
    assert report.snippets == len(points) == report.encoded + report.reused
    for src in expected:
        assert f"skipped {src}: " in report.summary()


@needs_index
def test_vc2l_index_prints_every_skipped_file_even_with_undecodable_names(
        corpus: tuple[Path, list[Case]], micro_model_dir: Path, tmp_path: Path) -> None:
    root, cases = corpus
    # The CLI has no size cap (and caps PDFs at 2,000 pages): give it every folder but the big text and PDF files,
    # by name.
    big = {"text/big_10MB.txt", "text/one_word_1MB.txt", "pdf/pages_2000.pdf"}
    paths = [root / d for d in ("images", "html", "fs")]
    paths += [root / c.name for c in cases if c.name.split("/")[0] in ("pdf", "text") and c.name not in big]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}  # as in a UTF-8 desktop locale
    vc2l = Path(sys.executable).with_name("vc2l")
    result = subprocess.run([str(vc2l), "index", *map(str, paths), "--index", str(tmp_path / "idx"),
                             "--model", str(micro_model_dir), "--batch-size", "64"],
                            capture_output=True, env=env, timeout=300)
    out = result.stdout.decode("utf-8", "surrogateescape")  # file names are printed as their bytes
    assert result.returncode == 0, result.stderr.decode("utf-8", "backslashreplace")[-2000:]
    expected = {src: reason for src, reason in expected_skips(root, cases).items()
                if os.path.relpath(src, root) not in big}
    skipped_lines = [line for line in out.splitlines() if line.startswith("  skipped ")]
    assert len(skipped_lines) == len(expected)
    for src, category in expected.items():
        assert any(line.startswith(f"  skipped {src}: ") and category in line for line in skipped_lines), src
    assert f"{len(expected)} skipped" in out
