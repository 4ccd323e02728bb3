"""The renderer: pixel parity with the paper, layout rules, determinism, any Unicode."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FIXTURES
from vc2l_retriever import RenderConfig, Renderer, Snippet, render
from vc2l_retriever.render import render_lines

CASES = json.loads((FIXTURES / "cases.json").read_text())["cases"]


@pytest.mark.parametrize("max_chars", [768, 1100])
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_official_render_matches_reference_pixel_for_pixel(case: dict, max_chars: int) -> None:
    renderer = Renderer(RenderConfig(max_chars=max_chars))
    tiles = [None if name is None else FIXTURES / name for name in case["images"]]
    ours = renderer.render_mosaic(case["text"], tiles)
    reference = np.asarray(Image.open(FIXTURES / f"{case['id']}_max{max_chars}.png").convert("RGB"))
    assert ours.shape == reference.shape == (448, 448, 3)
    assert np.array_equal(ours, reference)


def test_long_text_differs_between_max_chars_variants() -> None:
    text = next(c["text"] for c in CASES if c["id"] == "long_overflow")
    short = Renderer(RenderConfig(max_chars=768)).render(Snippet(text=text))
    long = Renderer(RenderConfig(max_chars=1100)).render(Snippet(text=text))
    assert not np.array_equal(short, long)


def test_empty_text_renders_a_blank_grey_canvas() -> None:
    canvas = Renderer().render(Snippet(text=""))
    assert canvas.shape == (448, 448, 3) and canvas.dtype == np.uint8
    assert (canvas == 127).all()


def test_text_is_lowercased_in_official_mode() -> None:
    r = Renderer()
    assert np.array_equal(r.render(Snippet(text="HELLO")), r.render(Snippet(text="hello")))


def test_snippet_images_fill_the_last_tiles_and_text_starts_top_left() -> None:
    red = Image.new("RGB", (224, 224), (255, 0, 0))
    canvas = Renderer().render(Snippet(text="caption", images=[red]))
    assert (canvas[224:, 224:] == [255, 0, 0]).all()  # bottom-right tile is the image
    assert (canvas[:16, :224] == 0).any()  # ink in the first text row


def test_more_images_than_free_tiles_keeps_the_first_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    colours = [(i * 40, 0, 0) for i in range(5)]
    images = [Image.new("RGB", (8, 8), c) for c in colours]
    r = Renderer()
    with caplog.at_level(logging.WARNING):
        canvas = r.render(Snippet(text="text", images=images))
        r.render(Snippet(text="text", images=images))
    tiles = [canvas[224:, :224], canvas[224:, 224:], canvas[:224, 224:]]
    kept = sorted(int(t[0, 0, 0]) for t in tiles)
    assert kept == [0, 40, 80]  # the first three images; the fourth and fifth are dropped
    assert sum("room for 3" in rec.getMessage() for rec in caplog.records) == 1


def test_images_only_snippet_uses_all_four_tiles() -> None:
    images = [Image.new("RGB", (10, 10), (i * 50, 10, 10)) for i in range(4)]
    canvas = Renderer().render(Snippet(images=images))
    assert [int(canvas[y, x, 0]) for y, x in [(0, 0), (0, 300), (300, 0), (300, 300)]] == [0, 50, 100, 150]


def test_line_breaking_moves_overflow_to_the_next_row() -> None:
    rows, used = render_lines("a" * 200, max_rows=10)
    assert used > 1
    assert (rows[16:32] == 0).any()  # second row has ink


def test_a_glyph_inked_at_the_cell_edge_is_trimmed_inside_the_cell() -> None:
    # U+1C25 has ink only in the last columns: the 4-column minimum must not reach past the 16-column cell.
    rows, used = render_lines("\u1c25" * 3, max_rows=1)
    assert used == 1 and (rows == 0).any()


def test_compact_canvas_height_follows_the_text() -> None:
    r = Renderer(RenderConfig(layout="compact", max_rows=32))
    short = r.render(Snippet(text="short query"))
    long = r.render(Snippet(text="word " * 120))
    assert short.shape == (16, 224, 3)
    assert long.shape[0] > 16 * 5 and long.shape[0] % 16 == 0
    assert long.shape[0] <= RenderConfig(layout="compact", max_rows=32).max_height


def test_compact_layout_draws_astral_characters_from_the_upper_planes() -> None:
    official = Renderer(RenderConfig())
    compact = Renderer(RenderConfig(layout="compact"))
    # U+1F600 wraps to U+F600 in the paper's renderer; the compact layout looks the real glyph up.
    assert np.array_equal(official.render(Snippet(text="\U0001F600")), official.render(Snippet(text="\uF600")))
    assert not np.array_equal(compact.render(Snippet(text="\U0001F600")), compact.render(Snippet(text="\uF600")))


@pytest.mark.parametrize("text", ["\x00\x01\x7f", "\ud800 lone surrogate", "مرحبا بالعالم", "a\u0301" * 50,
                                  "\U0010FFFF", "x" * 1_000_000])
def test_any_unicode_string_renders_without_error(text: str) -> None:
    for layout in ("official", "compact", "grid"):
        canvas = Renderer(RenderConfig(layout=layout)).render(Snippet(text=text))
        assert canvas.dtype == np.uint8 and canvas.ndim == 3


def test_render_helper_returns_a_pil_image(tmp_path: Path) -> None:
    im = render("hello")
    assert im.size == (448, 448) and im.mode == "RGB"
