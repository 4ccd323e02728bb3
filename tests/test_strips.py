"""Document pixels read as line strips (``strips.py``), real-font training strips, and pages through ``encode``."""

from __future__ import annotations

import glob
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from vc2l_retriever.inputs import Snippet
from vc2l_retriever.render import GLYPH
from vc2l_retriever.strips import (
    HEADING_HEIGHT,
    Strip,
    document_strips,
    figure_lines,
    figure_strips,
    find_lines,
    fold,
    line_strip,
    line_windows,
    ribbon,
    single_line_windows,
    to_grey,
)
from vc2l_retriever.training.font_strips import Style, text_ribbon, wrap
from vc2l_retriever.training.strip_distill import cell_targets, strip_term, strip_text

MONO = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"))
needs_font = pytest.mark.skipif(not MONO, reason="DejaVu Sans Mono (Debian fonts-dejavu-core) is not installed")

LINES = ["Installing the package", "Run the configure script first,", "then make and make install."]


def page_image(lines: list[str] = LINES, size: int = 20, width: int = 900) -> Image.Image:
    """A white page with ``lines`` drawn in black, one every 2 line heights, from y = 40."""
    font = ImageFont.truetype(MONO[0], size)
    image = Image.new("RGB", (width, 60 + 2 * size * len(lines) + 40), "white")
    draw = ImageDraw.Draw(image)
    for k, line in enumerate(lines):
        draw.text((30, 40 + 2 * size * k), line, fill="black", font=font)
    return image


@needs_font
def test_find_lines_returns_one_box_per_drawn_line_top_to_bottom() -> None:
    boxes = find_lines(page_image())
    assert len(boxes) == 3
    tops = [top for top, _, _, _ in boxes]
    assert tops == sorted(tops)
    for k, (top, bottom, left, _) in enumerate(boxes):
        assert 40 + 40 * k - 2 <= top < bottom <= 40 + 40 * k + 26  # inside the line's own 20-px text height
        assert 29 <= left <= 34


def test_a_band_much_taller_than_the_text_lines_is_not_read_as_a_line() -> None:
    grey = np.full((300, 400), 255, np.uint8)
    for top in (20, 50, 80):
        grey[top:top + 12, 20:300] = 0  # three "lines"
    grey[120:280, 20:380] = 60  # a figure
    assert [b[:2] for b in find_lines(grey)] == [(20, 32), (50, 62), (80, 92)]


def test_a_line_becomes_one_cell_per_glyph_a_blank_cell_per_word_space_and_wide_runs_split() -> None:
    grey = np.full((40, 200), 255.0, np.float32)
    for x0, x1 in ((10, 16), (20, 26), (60, 66), (100, 130)):  # two touching-close glyphs, a word, a wide run
        grey[10:30, x0:x1] = 0.0
    strip = line_strip(grey, 255.0, (10, 30, 10, 130))
    assert strip.pixels.shape == (GLYPH, 7 * 8)  # glyph, glyph, space, glyph, space, wide run in two halves
    cells = strip.pixels.reshape(GLYPH, 7, 8).transpose(1, 0, 2)
    assert [bool((c == 0).any()) for c in cells] == [True, True, False, True, False, True, True]
    assert (cells[0][:, 1:6] == 0).all() and (cells[0][:, [0, 6, 7]] == 127).all()  # 6 px -> 5 px, centred
    assert strip.source_x[::8].tolist() == [13.0, 23.0, 43.0, 63.0, 83.0, 107.5, 122.5]


def test_the_ribbon_lays_strips_end_to_end_with_a_blank_cell_and_folds_into_grid_rows() -> None:
    strip = Strip(pixels=np.zeros((GLYPH, 80), np.uint8), source_x=np.arange(80, dtype=np.float64))
    pixels, place = ribbon([strip] * 3)
    assert pixels.shape == (GLYPH, 3 * 88) and place.shape == (264, 2)
    assert (pixels[:, 80:88] == 127).all() and (place[80:88] == -1).all()
    assert (place[:80, 0] == 0).all() and (place[88:168, 0] == 1).all() and place[100, 1] == 12.0
    canvases = fold(pixels, columns=28, max_rows=1)
    assert [c.shape for c in canvases] == [(16, 224, 3)] * 2  # 33 cells: two rows of 28, one row a canvas
    assert (canvases[1][:, 40:] == 127).all()  # the second row ends at the ribbon's last cell, then background


def test_line_windows_begin_at_each_lines_first_cell_and_leave_no_cell_unread() -> None:
    def strip(k: int, cells: int) -> Strip:  # cell j of line k is filled with the grey level 10 k + j
        pixels = np.repeat(10 * k + np.arange(cells, dtype=np.uint8), 8)[None].repeat(GLYPH, 0)
        return Strip(pixels=pixels, source_x=np.arange(8 * cells, dtype=np.float64))

    lines = [strip(1, 3), strip(2, 10), strip(3, 1)]  # the ribbon: 3 cells, blank, 10, blank, 1, blank
    windows = line_windows(lines, columns=4, max_rows=2)  # 8 cells a window
    firsts = [int(w[0, 0, 0]) for w in windows]
    assert firsts == [10, 20, 28, 30]  # lines 1, 2 and 3, and again 8 cells into line 2 (longer than a window)
    assert [w.shape for w in windows] == [(32, 32, 3), (32, 32, 3), (32, 32, 3), (16, 32, 3)]
    cells = [w[::GLYPH, ::8, 0].ravel().tolist() for w in windows]  # each window's cells, row by row
    assert cells[0] == [10, 11, 12, 127, 20, 21, 22, 23]  # line 1, the blank cell, then line 2 runs on
    assert cells[3] == [30, 127, 127, 127]  # the last line: one row, padded with the background
    read = {c for window in cells for c in window}
    assert read >= {10, 11, 12, *range(20, 30), 30}  # every cell of every line is in some window
    assert line_windows(lines, columns=4, max_rows=2, background=200)[3][0, 8, 0] == 200


@needs_font
def test_a_pages_points_come_from_line_windows_and_its_vector_from_its_canvases(reader_model, monkeypatch  # noqa: ANN001
                                                                                ) -> None:
    from dataclasses import replace

    from vc2l_retriever.render import Renderer

    page = page_image(LINES * 4)
    module = reader_model.vc2l
    config = replace(module.renderer.config, page_rows=2, page_windows="lines")
    drawn = Renderer(config).draw(Snippet(images=[page]), windows=True)
    strips = document_strips(page)
    assert drawn.page and len(strips) == 12
    per = config.columns * 2
    assert len(drawn.windows) == sum(-(-s.pixels.shape[1] // 8 // per) for s in strips)  # one a line, more if long
    heading = fold(ribbon(strips[4:])[0], config.columns, 2)[0]  # "Installing the package" again, and what follows
    assert any(np.array_equal(w, heading) for w in drawn.windows)
    assert not any(np.array_equal(c, heading) for c in drawn.canvases)  # the fold splits it
    assert Renderer(config).draw(Snippet(images=[page])).windows == []  # drawn only when points are asked for

    folded = replace(config, page_windows="fold")
    monkeypatch.setattr(module, "renderer", Renderer(folded))
    mean = reader_model.encode([page])[0]
    monkeypatch.setattr(module, "renderer", Renderer(config))
    np.testing.assert_allclose(reader_model.encode([page])[0], mean, atol=1e-6)  # encode does not move
    points = reader_model.encode_points([page])[0]
    windows = module.embed_canvases(drawn.windows, [True] * len(drawn.windows))
    np.testing.assert_allclose(points, (mean + windows) / 2, atol=1e-5)


def page_with_heading() -> Image.Image:
    """``LINES`` at 20 px under a 30-px heading, and the heading again lower down at body size."""
    image = Image.new("RGB", (900, 360), "white")
    draw = ImageDraw.Draw(image)
    draw.text((30, 30), "Building from source", fill="black", font=ImageFont.truetype(MONO[0], 30))
    body = ImageFont.truetype(MONO[0], 20)
    for k, line in enumerate([*LINES, "Building from source"]):
        draw.text((30, 90 + 40 * k), line, fill="black", font=body)
    return image


@needs_font
def test_a_heading_is_a_line_taller_than_the_pages_median_and_lines_are_read_alone_as_configured(reader_model  # noqa: ANN001
                                                                                                 ) -> None:
    from dataclasses import replace

    from vc2l_retriever.render import Renderer

    strips = document_strips(page_with_heading())
    heights = [s.height for s in strips]
    assert len(strips) == 5 and heights[0] >= 1.3 * np.median(heights)  # the 30-px heading; body lines alike
    heading = single_line_windows(strips, 28, 5, tall=HEADING_HEIGHT)
    assert len(heading) == 1 and np.array_equal(heading[0], fold(strips[0].pixels, 28, 5)[0])
    every = single_line_windows(strips, 28, 5)
    assert len(every) == 5 and all(np.array_equal(w, fold(s.pixels, 28, 5)[0]) for w, s in zip(every, strips,
                                                                                                strict=True))
    assert single_line_windows(strips, 28, 5, tall=2.0) == [] and single_line_windows([], 28, 5) == []

    lines = replace(reader_model.vc2l.renderer.config, page_rows=5, page_windows="lines")
    plain = Renderer(lines).draw(Snippet(images=[page_with_heading()]), windows=True).windows
    for alone, extra in (("headings", heading), ("all", every)):
        config = replace(lines, lines_alone=alone)
        drawn = Renderer(config).draw(Snippet(images=[page_with_heading()]), windows=True)
        assert len(drawn.windows) == len(plain) + len(extra)
        assert all(np.array_equal(a, b) for a, b in zip(drawn.windows[len(plain):], extra, strict=True))
        assert config.to_dict()["lines_alone"] == alone
    assert "lines_alone" not in lines.to_dict()
    with pytest.raises(ValueError, match="lines_alone"):
        replace(lines, lines_alone="some")


@needs_font
def test_each_ribbon_cell_knows_the_character_drawn_under_it() -> None:
    text = "make install DESTDIR=/tmp"
    pixels, cell_char = text_ribbon(text, Style(font=MONO[0], size=24, width=2000), random.Random(0))
    assert cell_char.size == pixels.shape[1] // 8
    # Monospace glyphs at this size are wider than a cell: every character is under at least one cell's centre,
    # in order, so the cells spell the text once repeats are merged.
    hits = [int(k) for k in cell_char if k >= 0]
    merged = [k for i, k in enumerate(hits) if i == 0 or k != hits[i - 1]]
    assert "".join(text[k] for k in merged) == text


@needs_font
def test_wrapping_keeps_each_lines_offset_into_the_text() -> None:
    font = ImageFont.truetype(MONO[0], 20)
    text = "one two three four five six seven"
    lines = wrap(text, font, width=int(font.getlength("one two three")) + 1)
    assert [line for _, line in lines] == ["one two three", "four five six", "seven"]
    assert all(text[offset:offset + len(line)] == line for offset, line in lines)


def test_strip_targets_point_at_the_grid_cells_of_the_same_characters() -> None:
    assert strip_text("Make  Install", "make install") == "Make Install"
    assert strip_text("İ", "i̇") == "i̇"  # lower-casing changed the length: draw the grid's text instead
    targets = cell_targets(np.array([0, 1, -1, 5, 40]), "ab cdefgh", columns=4, max_rows=2)
    assert targets.tolist() == [0, 1, -1, 5, -1]  # 40 lies past the text


def test_a_strip_cell_whose_character_lies_past_the_grids_content_has_no_target() -> None:
    target = torch.zeros(1, 4, 2)
    target[0, :3] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # three content cells; the fourth is zero
    student = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])  # exact, twice the length, and a blank's box
    idx = torch.tensor([[0, 1, 3]])  # the last strip cell reads a character the grid left blank past its content
    term = strip_term(student, target, idx, content=torch.tensor([3]))
    # Cell 0: distance 0; cell 1: (1 - cos 1) + |(0, 1)|^2 / |(0, 1)|^2 = 1; cell 2 is out (to zero: 5e7).
    assert float(term) == pytest.approx(0.5)
    assert float(strip_term(student, target, torch.tensor([[0, 1, -1]]), torch.tensor([3]))) == pytest.approx(0.5)


@needs_font
def test_a_page_image_is_read_as_its_lines_and_pooled_into_one_vector(reader_model) -> None:  # noqa: ANN001
    module = reader_model.vc2l
    page = page_image()
    canvases, is_page = module.renderer.render_canvases(Snippet(images=[page]))
    assert is_page and len(canvases) == 1 and canvases[0].shape[1] == 224  # three short lines: one canvas
    long_page = page_image(LINES * 30)
    many, _ = module.renderer.render_canvases(Snippet(images=[long_page]))
    assert len(many) > 1
    with torch.no_grad():
        pixels = module.canvases_to_features(many)["pixel_values"]
        parts = torch.nn.functional.normalize(module.model(pixels, pages=torch.ones(len(many), dtype=torch.bool)),
                                              dim=-1)
    pooled = (parts.mean(0) / parts.mean(0).norm()).numpy()
    whole = reader_model.encode([long_page, "a query"])
    np.testing.assert_allclose(whole[0], pooled, atol=1e-5)


def test_a_photo_is_not_read_as_a_document(reader_model) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (400, 500, 3), dtype=np.uint8))
    canvases, is_page = reader_model.vc2l.renderer.render_canvases(Snippet(images=[photo]))
    assert len(canvases) == 1 and not is_page
    assert document_strips(photo, require_document=True) == []


def plot_image() -> Image.Image:
    """A plot as matplotlib draws one: a framed axes box with a curve, tick labels beside the frame, a legend
    inside it and a title and an axis label, all in 11-px DejaVu Sans Mono."""
    font = ImageFont.truetype(MONO[0], 11)
    image = Image.new("RGB", (480, 360), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([60, 40, 440, 300], outline="black")  # the axes frame
    draw.line([(60 + x, 300 - int(240 * (x / 380) ** 2)) for x in range(0, 380, 4)], fill=(31, 119, 180), width=2)
    draw.text((200, 12), "Filter response", fill="black", font=font)  # title, above the frame
    for k, tick in enumerate(("0.0", "0.5", "1.0")):  # tick labels share their rows with the frame and curve
        draw.text((20, 294 - 120 * k), tick, fill="black", font=font)
    draw.text((300, 60), "ramp filter", fill="black", font=font)  # legend, inside the frame
    draw.text((220, 320), "frequency", fill="black", font=font)
    return image


@needs_font
def test_a_plots_labels_are_found_beside_its_curve_and_frame_in_reading_order() -> None:
    boxes = [box for box, _ in figure_lines(plot_image())[1]]
    assert len(find_lines(plot_image())) <= 3  # the row profile sees the framed plot as one tall band
    assert len(boxes) == 6  # title, legend, three ticks, axis label; neither the frame nor the curve
    for top, bottom, left, right in boxes:
        assert 7 <= bottom - top <= 14 and right - left < 120
    # rows top to bottom: title (drawn at x 200), legend (300) and top tick (20) share a row, read left to
    # right; middle tick, bottom tick, axis label (220)
    lefts = [left for _, _, left, _ in boxes]
    assert lefts == pytest.approx([200, 20, 300, 20, 20, 220], abs=3)
    assert [len(s.pixels) for s in figure_strips(plot_image())] == [GLYPH] * 6


@needs_font
def test_a_screenshots_labels_are_found_on_dark_and_light_panels_alike() -> None:
    font = ImageFont.truetype(MONO[0], 12)
    image = Image.new("RGB", (420, 200), (236, 236, 236))  # a window's light grey
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 419, 28], fill=(40, 44, 52))  # a dark toolbar with light text
    draw.text((10, 8), "File Edit View", fill="white", font=font)
    draw.rectangle([20, 80, 400, 110], fill="white", outline=(120, 120, 120))  # a white field in a grey frame
    draw.text((30, 88), "Checking Account", fill="black", font=font)
    draw.text((20, 150), "Transfer funds", fill=(30, 30, 30), font=font)  # text on the window itself
    labels = figure_lines(image)[1]
    assert [left for (_, _, left, _), _ in labels] == pytest.approx([10, 30, 20], abs=3)
    papers = [paper for _, paper in labels]
    assert papers[0] < 60 and papers[1] > 250 and 220 < papers[2] < 250  # each read against its own panel
    assert all(s.pixels[:, :8].min() < 60 for s in figure_strips(image))  # ink is dark in every strip


def test_a_photo_or_a_blank_image_has_no_labels() -> None:
    rng = np.random.default_rng(0)
    assert figure_lines(Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)))[1] == []
    assert figure_lines(Image.new("RGB", (300, 200), "white"))[1] == []


@needs_font
def test_a_figure_is_read_from_its_labels_only_when_the_model_says_so(reader_model) -> None:  # noqa: ANN001
    from dataclasses import replace

    from vc2l_retriever.render import Renderer

    renderer = reader_model.vc2l.renderer
    tiles, is_page = renderer.render_canvases(Snippet(images=[plot_image()]))
    assert not is_page and len(tiles) == 1  # shipped before: the plot fails the document test, one tile
    labels = Renderer(replace(renderer.config, figure_labels=True))
    canvases, is_page = labels.render_canvases(Snippet(images=[plot_image()]))
    expected = fold(ribbon(figure_strips(plot_image()))[0], renderer.config.columns, renderer.config.max_rows)
    assert is_page and len(canvases) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(canvases, expected, strict=True))
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    assert not labels.render_canvases(Snippet(images=[photo]))[1]  # no labels: still one tile
    assert "figure_labels" not in renderer.config.to_dict()
    assert labels.config.to_dict()["figure_labels"] is True


@needs_font
def test_page_strips_are_read_the_same_from_any_ink_colour() -> None:
    page = page_image()
    inverted = Image.fromarray(255 - np.asarray(page))
    a, b = document_strips(page), document_strips(inverted)
    assert len(a) == len(b) == 3
    np.testing.assert_array_equal(a[0].pixels, b[0].pixels)
    assert to_grey(inverted).mean() < 128


@needs_font
def test_a_scanned_pdf_page_indexes_as_one_page_snippet_with_the_same_vector_as_its_image(tmp_path, reader_model
                                                                                           ) -> None:  # noqa: ANN001
    import fpdf

    from vc2l_retriever.index import GRID_PAGE_WIDTH_PX, default_ingest_options
    from vc2l_retriever.ingest import ingest_file

    page_image(LINES * 4, size=28, width=1240).save(tmp_path / "scan.png")  # text as pixels only
    pdf = fpdf.FPDF()
    pdf.add_page()
    pdf.image(str(tmp_path / "scan.png"), x=0, y=0, w=210)
    pdf.output(str(tmp_path / "scan.pdf"))

    options = default_ingest_options(reader_model)
    assert not options.page_tiles and options.page_width_px == GRID_PAGE_WIDTH_PX
    [snippet] = ingest_file(tmp_path / "scan.pdf", options)
    assert snippet.kind == "page" and snippet.images[0].width == GRID_PAGE_WIDTH_PX
    assert len(find_lines(snippet.images[0])) == 12
    from_index, from_image = reader_model.encode([snippet, snippet.images[0]])
    np.testing.assert_allclose(from_index, from_image, atol=1e-6)


def test_lines_of_a_pdf_page_carry_their_text_layer_and_the_character_under_each_cell(text_pdf) -> None:  # noqa: ANN001
    from vc2l_retriever.training.pdf_strips import PdfLines, page_lines

    doc = text_pdf(LINES)
    lines = page_lines(str(doc), 0, 110)
    assert [line.text for line in lines] == LINES
    for line in lines:
        hits = [int(k) for k in line.column_char if k >= 0]
        assert hits == sorted(hits) and len(set(hits)) > 0.6 * len(line.text)  # left to right, most glyphs hit
    text, pixels, cell_char = PdfLines([(str(doc), 1)], seed=0).sample(0, max_chars=1000)
    # A run of consecutive lines from a random first line to the page's end, joined by spaces.
    assert " ".join(LINES).endswith(text) and text.split(" ")[0] in {line.split(" ")[0] for line in LINES}
    assert cell_char.size == pixels.shape[1] // 8
    first_word = text.split(" ")[0]
    first = [text[k] for k in cell_char[: len(first_word)] if k >= 0]
    assert first[0] == text[0] and len(set(first) & set(first_word)) >= len(set(first_word)) - 1


@needs_font
def test_a_page_stem_reads_page_strips_and_leaves_typed_text_to_the_text_stem(reader_model) -> None:  # noqa: ANN001
    import dataclasses

    import vc2l_retriever

    config = dataclasses.replace(reader_model.vc2l.config, page_stem=True)
    model = vc2l_retriever.create(config, seed=0, device="cpu")
    model.vc2l.model.load_state_dict(reader_model.vc2l.model.state_dict(), strict=False)  # same text stem and body
    page, text = page_image(), "make install"
    np.testing.assert_allclose(model.encode([text]), reader_model.encode([text]), atol=1e-6)
    mixed = model.encode([page, text])
    np.testing.assert_allclose(mixed[0], model.encode([page])[0], atol=1e-5)
    np.testing.assert_allclose(mixed[1], model.encode([text])[0], atol=1e-5)
    assert not np.allclose(mixed[0], reader_model.encode([page])[0], atol=1e-3)  # the page went through its stem


def test_a_page_is_stored_as_points_whose_best_dot_product_scores_its_mean_and_best_canvas(reader_model  # noqa: ANN001
                                                                                          ) -> None:
    long_page = page_image(LINES * 30)
    text_points, page_points = reader_model.encode_points(["a query", long_page])
    # A text is one point: its own embedding.
    np.testing.assert_allclose(text_points, reader_model.encode(["a query"]), atol=1e-5)
    mean = reader_model.encode([long_page])[0]
    assert page_points.shape[0] > 1 and page_points.shape[1] == mean.shape[0]
    canvases = 2 * page_points - mean  # each point is (mean + canvas) / 2
    np.testing.assert_allclose(np.linalg.norm(canvases, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(canvases.mean(0) / np.linalg.norm(canvases.mean(0)), mean, atol=1e-5)
    q = reader_model.encode(["then make and make install."])[0]
    assert float((page_points @ q).max()) == pytest.approx((q @ mean + (canvases @ q).max()) / 2, abs=1e-5)
    with pytest.raises(TypeError, match="a list of inputs"):
        reader_model.encode_points("a query")


def test_fewer_page_rows_read_a_page_as_more_canvases(reader_model) -> None:  # noqa: ANN001
    from dataclasses import replace

    from vc2l_retriever.render import Renderer

    long_page = page_image(LINES * 30)
    renderer = reader_model.vc2l.renderer
    default, _ = renderer.render_canvases(Snippet(images=[long_page]))
    short, _ = Renderer(replace(renderer.config, page_rows=5)).render_canvases(Snippet(images=[long_page]))
    assert all(c.shape[0] <= 5 * GLYPH for c in short)
    assert len(short) > len(default)
    assert sum(c.shape[0] for c in short) >= sum(c.shape[0] for c in default)


def test_page_rows_and_windows_are_saved_only_when_set_so_older_models_keep_their_fingerprint() -> None:
    from vc2l_retriever.model import VC2LConfig
    from vc2l_retriever.render import RenderConfig

    default = VC2LConfig.from_preset("reader-micro")
    assert "page_rows" not in default.to_dict()["render"] and "page_rows" not in default.render.to_dict()
    five = VC2LConfig.from_preset("reader-micro", render={"page_rows": 5})
    assert five.to_dict()["render"]["page_rows"] == 5
    assert VC2LConfig.from_dict(five.to_dict()).render.page_rows == 5
    with pytest.raises(ValueError, match="page_rows"):
        RenderConfig(layout="grid", max_rows=20, page_rows=21)
    assert "page_windows" not in default.to_dict()["render"]
    lines = VC2LConfig.from_preset("reader-micro", render={"page_windows": "lines"})
    assert VC2LConfig.from_dict(lines.to_dict()).render.page_windows == "lines"
    with pytest.raises(ValueError, match="page_windows"):
        RenderConfig(layout="grid", page_windows="rows")
