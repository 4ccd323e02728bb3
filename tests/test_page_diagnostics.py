"""The page diagnostics (``training/page_diagnostics.py``): how a page's canvases are scored, and its five views."""

from __future__ import annotations

import glob

import numpy as np
import pytest

from vc2l_retriever.render import GLYPH, RenderConfig
from vc2l_retriever.strips import Strip, line_windows
from vc2l_retriever.training.page_diagnostics import (
    line_window_index,
    line_window_vectors,
    page_score,
    page_views,
    tall_lines,
    weighted_score,
    window_starts,
)

LINES = ["Installing the package", "Run the configure script first,", "then make and make install."]
needs_font = pytest.mark.skipif(not glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
                                reason="DejaVu Sans (Debian fonts-dejavu-core) is not installed")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_page_scores_by_mean_best_canvas_and_both_on_a_hand_made_page() -> None:
    q = np.array([[1.0, 0.0, 0.0]])
    canvases = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # mean (0.5, 0.5, 0) -> unit: q . m = 0.7071
    assert page_score(q, canvases, "mean") == pytest.approx([0.70711], abs=1e-5)
    assert page_score(q, canvases, "max") == pytest.approx([1.0])
    assert page_score(q, canvases, "mean+max") == pytest.approx([(0.70711 + 1.0) / 2], abs=1e-5)
    assert page_score(q, canvases, "max(mean,canvases)") == pytest.approx([1.0])
    # unit(c + mean) for c = (1, 0, 0): (1.5, 0.5, 0) / 1.5811 -> q . that = 0.94868
    assert page_score(q, canvases, "canvas+mean") == pytest.approx([0.94868], abs=1e-5)
    with pytest.raises(ValueError, match="unknown pooling"):
        page_score(q, canvases, "median")


def test_mean_plus_max_is_the_cosine_of_the_best_mean_canvas_pair_against_the_query_twice() -> None:
    rng = np.random.default_rng(0)
    q = unit(rng.normal(size=(4, 16)))
    canvases = unit(rng.normal(size=(5, 16)))
    mean = unit(canvases.mean(0))
    points = np.concatenate([np.repeat(mean[None], 5, 0), canvases], axis=1)  # each canvas stored as [mean, c]
    queries = np.concatenate([q, q], axis=1)
    cosine = unit(queries) @ unit(points).T
    assert np.allclose(cosine.max(1), page_score(q, canvases, "mean+max"), atol=1e-6)


def test_overlapping_windows_start_every_stride_rows_and_a_full_last_window_covers_the_tail() -> None:
    assert window_starts(17, 5, 5) == [0, 5, 10, 12]
    assert window_starts(17, 5, 3) == [0, 3, 6, 9, 12]
    assert window_starts(17, 5, 1) == list(range(13))
    assert window_starts(3, 5, 2) == [0] and window_starts(6, 5, 5) == [0, 1]


def test_the_mean_is_weighted_against_the_best_window() -> None:
    q = np.array([[1.0, 0.0]])
    fold = np.array([[1.0, 0.0], [0.0, 1.0]])  # unit mean (0.7071, 0.7071)
    windows = np.array([[0.6, 0.8], [0.0, 1.0]])  # best window: 0.6
    assert weighted_score(q, fold, windows, 0.5) == pytest.approx([(0.70711 + 0.6) / 2], abs=1e-5)
    assert weighted_score(q, fold, windows, 0.25) == pytest.approx([0.25 * 0.70711 + 0.75 * 0.6], abs=1e-5)


def test_each_line_is_scored_by_its_first_window_and_short_lines_join_the_fold(reader_model) -> None:  # noqa: ANN001
    def strip(cells: int, level: int) -> Strip:
        return Strip(pixels=np.full((GLYPH, 8 * cells), level, np.uint8), source_x=np.zeros(8 * cells))

    module = reader_model.vc2l
    strips = [strip(3, 20), strip(200, 60), strip(1, 100)]  # the second line needs two windows of 140 cells
    fold = np.zeros((2, module.get_embedding_dimension()), np.float32)
    out = line_window_vectors(module, strips, 28, 5, 127, fold)
    windows = line_windows(strips, 28, 5)
    direct = module.embed_canvases(windows, [True] * len(windows))
    assert len(windows) == 4
    np.testing.assert_allclose(out["lines2"], direct, atol=1e-5)
    np.testing.assert_allclose(out["lines"], direct[[0, 1, 3]], atol=1e-5)
    np.testing.assert_allclose(out["lines+fold"], np.concatenate([fold, direct[[0, 1, 3]]]), atol=1e-5)
    np.testing.assert_allclose(out["short+fold"], np.concatenate([fold, direct[[0, 3]]]), atol=1e-5)


def test_headings_are_lines_taller_than_the_page_median_and_own_the_windows_they_begin() -> None:
    def strip(cells: int, height: float = 16.0) -> Strip:
        return Strip(pixels=np.full((GLYPH, 8 * cells), 60, np.uint8), source_x=np.zeros(8 * cells), height=height)

    page = [strip(3, 24), strip(4), strip(4), strip(4, 17), strip(4, 19), strip(4)]  # median height 16
    assert tall_lines(page, 1.15).tolist() == [0, 4]
    assert tall_lines(page, 1.3).tolist() == [0]
    assert tall_lines([], 1.15).size == 0
    strips = [strip(3), strip(200), strip(1)]  # 140 cells a window: the second line begins two
    assert line_window_index(strips, 28, 5).tolist() == [0, 1, 1, 2]
    assert len(line_windows(strips, 28, 5)) == 4


@needs_font
def test_a_pdf_page_is_viewed_as_pixels_drawn_text_and_typed_text_of_the_same_lines(text_pdf) -> None:  # noqa: ANN001
    cfg = RenderConfig(layout="grid")

    views = page_views(f"{text_pdf(LINES)}#1", cfg)
    assert set(views) == {"P_all", "P", "F", "U_page", "U"}
    assert [page for _, page in views.values()] == [True, True, True, True, False]
    # Every line is in the text layer, so P_all and P are the same canvases.
    assert all(np.array_equal(a, b) for a, b in zip(views["P_all"][0], views["P"][0], strict=True))
    typed = views["U"][0]
    assert typed is views["U_page"][0] and len(typed) == 1
    text = " ".join(LINES).lower()
    rows = -(-len(text) // cfg.columns)
    assert typed[0].shape == (rows * GLYPH, cfg.columns * 8, 3)
    drawn = views["F"][0]
    assert len(drawn) == 1 and drawn[0].shape[1] == cfg.columns * 8
