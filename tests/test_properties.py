"""Property-based tests (hypothesis): rendering, batching and text packing hold for any input, not just examples.

Each property runs a bounded number of examples (``max_examples``) so the file stays within a few seconds per
test; ``deadline=None`` because the first example pays for loading the font atlas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from vc2l_retriever.ingest import IngestOptions, ingest_file
from vc2l_retriever.inputs import Snippet
from vc2l_retriever.render import GLYPH, RenderConfig, Renderer, render_lines

# Any code point, lone surrogates included (st.text() leaves them out by default).
ANY_CHAR = st.characters(exclude_categories=())
ANY_TEXT = st.text(alphabet=ANY_CHAR, max_size=1500)

OFFICIAL = RenderConfig()
COMPACT = RenderConfig(layout="compact", max_chars=256, max_rows=8, max_images=1)
COMPACT_TALL = RenderConfig(layout="compact", max_chars=2000, max_rows=40, max_images=2, lowercase=False)
GRID = RenderConfig(layout="grid", max_rows=6, max_chars=512)
CONFIGS = [OFFICIAL, COMPACT, COMPACT_TALL, GRID]

MODES = ["RGB", "L", "LA", "RGBA", "P", "1", "I;16", "I", "F", "CMYK"]


@st.composite
def images(draw: st.DrawFn) -> Image.Image:
    """A small image of any common mode and odd size (1x1 to 1x300), with random pixels."""
    mode = draw(st.sampled_from(MODES))
    width = draw(st.integers(1, 300))
    height = draw(st.integers(1, max(1, 3000 // width)))
    seed = draw(st.integers(0, 2**16))
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(rgb, "RGB")
    if mode in ("I;16", "I", "F"):
        return image.convert("L").convert(mode)
    return image.convert(mode)


SNIPPETS = st.builds(Snippet, text=ANY_TEXT, images=st.lists(images(), max_size=5))


def check_shape(canvas: np.ndarray, config: RenderConfig) -> None:
    assert canvas.dtype == np.uint8 and canvas.ndim == 3 and canvas.shape[2] == 3
    if config.layout == "official":
        assert canvas.shape == (448, 448, 3)
    else:
        assert canvas.shape[1] == config.tile
        assert canvas.shape[0] % config.patch == 0 and GLYPH <= canvas.shape[0] <= config.max_height


@settings(max_examples=150, deadline=None)
@given(text=ANY_TEXT, config=st.sampled_from(CONFIGS))
def test_any_unicode_string_renders_to_the_configured_shape_deterministically(text: str,
                                                                                config: RenderConfig) -> None:
    canvas = Renderer(config).render(Snippet(text=text))
    check_shape(canvas, config)
    np.testing.assert_array_equal(canvas, Renderer(config).render(Snippet(text=text)))


@settings(max_examples=80, deadline=None)
@given(snippet=SNIPPETS, config=st.sampled_from(CONFIGS))
def test_any_snippet_renders_to_the_configured_shape_deterministically(snippet: Snippet,
                                                                        config: RenderConfig) -> None:
    renderer = Renderer(config)
    canvas = renderer.render(snippet)
    check_shape(canvas, config)
    np.testing.assert_array_equal(canvas, renderer.render(snippet))  # and the inputs were not modified


@settings(max_examples=60, deadline=None)
@given(text=ANY_TEXT, rows=st.integers(1, 40))
def test_render_lines_reports_rows_within_the_limit(text: str, rows: int) -> None:
    canvas, used = render_lines(text, rows)
    assert canvas.shape == (rows * GLYPH, 224) and 0 <= used <= rows
    assert (used == 0) == (not text)
    assert (canvas[used * GLYPH:] == 127).all()  # nothing drawn below the rows it reports


def _inputs() -> st.SearchStrategy:
    small_images = images()
    return st.one_of(
        ANY_TEXT.map(lambda t: t[:300]),
        small_images,
        st.builds(lambda t, im: {"text": t, "image": im}, ANY_TEXT.map(lambda t: t[:200]), small_images),
        st.builds(Snippet, text=ANY_TEXT.map(lambda t: t[:200]), images=st.lists(small_images, max_size=2)),
    )


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(batch=st.lists(_inputs(), min_size=1, max_size=5))
def test_a_mixed_batch_embeds_each_item_as_if_it_were_alone(batch: list, micro_model: object) -> None:
    together = micro_model.encode(batch, batch_size=len(batch))  # type: ignore[attr-defined]
    alone = np.stack([micro_model.encode([item])[0] for item in batch])  # type: ignore[attr-defined]
    assert together.shape == alone.shape
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("texts")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=4000), budget=st.integers(1, 300))
def test_a_text_file_is_packed_within_budget_without_losing_or_reordering_a_character(
        text: str, budget: int, text_dir: Path) -> None:
    assume(not text.startswith("\ufeff"))  # a leading U+FEFF is read as a byte-order mark, by design
    path = text_dir / "doc.txt"
    path.write_text(text, encoding="utf-8", newline="")
    snippets = ingest_file(path, IngestOptions(max_chars=budget))
    assert all(0 < len(s.text) <= budget for s in snippets)
    assert [s.order for s in snippets] == list(range(len(snippets)))
    assert "".join("".join(s.text.split()) for s in snippets) == "".join(text.split())
