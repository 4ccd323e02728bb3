"""The page diagnostics (``training/page_diagnostics.py``): how a page's canvases are scored, and its five views."""

from __future__ import annotations

import glob

import numpy as np
import pytest

from vc2l_retriever.render import GLYPH, RenderConfig
from vc2l_retriever.training.page_diagnostics import page_score, page_views

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
