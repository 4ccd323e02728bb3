"""Where page reading loses, and how a page's canvases should be scored: no-training diagnostics (issue 17).

Each reads the CSR sets of ``csr_compare.py`` (pages rendered 1275 px wide, as ingestion renders a scan) with one
model and print Recall@1 / nDCG@10 per set, pooled, and paired against the shipped path.

``views``: each target page read five ways, each folded into canvases and mean-pooled as a page is:
  P_all   every line's real pixels through the page stem (the shipped path)
  P       only the lines the PDF's text layer covers
  F       those lines' texts drawn by Pillow in one training font at the line's height, cut the same way
  U_page  those texts typed on the grid (Unifont cells), through the page stem
  U       the same canvases through the typed-text stem
P - F is what the page's own rendering costs, F - U what reading a font costs against Unifont.

``pooling``: pages folded into canvases of 20, 10 or 5 rows, each canvas one vector, a page scored by the mean of
its canvases (one vector, shipped), its best canvas, the average of those two scores, their larger, or its best
canvas added to the mean. ``--fresh`` scores queries no earlier decision saw instead: ood / ood2 pages 41-80
(among pages 1-80) and the next 24 held-out texlive PDFs.

``windows``: a page's points taken from overlapping windows of the model's ``page_rows`` rows, starting every
``s`` rows of the folded ribbon (s = 5 is the shipped fold, fewer rows apart means more points a page), and the
weight of the page's mean against its best window (the shipped points weigh them 1:1). The mean is always the
shipped fold's, so ``encode`` would not move.

``lines``: windows that begin at each text line instead (``strips.line_windows``; shipped as ``page_windows:
"lines"``), with the fold's canvases or alone, and with the page's mean over its own windows. ``window-rows``:
line windows of 5 (shipped), 3 or 8 rows, the mean still the 5-row fold's.

``headings``: a page's headings (lines at least t = 1.15 or 1.3 times its median line height, ``--tall``; t = 0
is every line; the strips are scaled to 16 px, so the page stem never sees a line's size) given a point of their
own (each strip alone, ``strips.single_line_windows``) or their line windows' vectors weighted up by a gain g
(points ``(m + g c) / 2``), against line windows alone.

    python -m vc2l_retriever.training.page_diagnostics views MODEL
    python -m vc2l_retriever.training.page_diagnostics pooling MODEL [--fresh] [--sets ood,ood2] [--save OUT.npz]
    python -m vc2l_retriever.training.page_diagnostics windows MODEL [--fresh] [--save OUT.npz]
    python -m vc2l_retriever.training.page_diagnostics lines MODEL [--fresh] [--save OUT.npz]
    python -m vc2l_retriever.training.page_diagnostics window-rows MODEL [--fresh] [--save OUT.npz]
    python -m vc2l_retriever.training.page_diagnostics headings MODEL [--tall 1.15,1.3] [--fresh] [--save OUT.npz]
"""

from __future__ import annotations

import argparse
import glob
import random
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vc2l_retriever import evaluation as ev
from vc2l_retriever.index import GRID_PAGE_WIDTH_PX
from vc2l_retriever.render import CELL_W, GLYPH, render_grid
from vc2l_retriever.strips import (
    Strip,
    document_strips,
    fold,
    line_strip,
    line_windows,
    paper_level,
    ribbon,
    single_line_windows,
    split_page,
)
from vc2l_retriever.training.csr_compare import csr_sets
from vc2l_retriever.training.font_strips import Style, draw_line, ink_box
from vc2l_retriever.training.pdf_strips import PageLine, match_line, text_layer

DRAW_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # a training font (strips_s13f.yaml)
VIEWS = ("P_all", "P", "F", "U_page", "U")
ROWS = (20, 10, 5)
POOLINGS = ("mean", "max", "mean+max", "max(mean,canvases)", "canvas+mean")
STRIDES = (5, 3, 2, 1)
LINE_KEYS = ("lines", "lines2", "lines+fold", "short+fold")
WINDOW_ROWS = (5, 3, 8)  # the shipped windows first: the base
TALL = (1.15, 1.3)  # a heading: a line at least this many times the page's median line height
HEAD_GAINS = (1.1, 1.25)  # a heading window's point (m + g c) / 2
MEAN_WEIGHTS = (0.5, 0.35, 0.65)

Sets = dict[str, tuple[list[ev.CSRPair], int, int]]


def fresh_sets(data: str = "data") -> Sets:
    """CSR queries that no decision so far has seen (``csr_compare.csr_sets`` uses every query of its pages)."""
    held = ev.pdf_sources(ev.open_documents(f"{data}/docs/heldout.jsonl", None))
    random.Random(0).shuffle(held)  # the same order as csr_sets: it takes the first 24

    def late(pdfs: str) -> list[ev.CSRPair]:
        return [p for p in ev.csr_pairs(sorted(glob.glob(pdfs)), max_pages=80) if p.page > 40]

    return {"ood": (late(f"{data}/ood_pdfs_src/*.pdf"), 200, 80),
            "ood2": (late(f"{data}/ood2_pdfs_src/*.pdf"), 300, 80),
            "in-domain": (ev.csr_pairs(held[24:48], max_pages=8), 500, 8)}


def render(label: str) -> tuple[Any, list[str], np.ndarray]:
    """A CSR target ``pdf#page`` rendered as ingestion renders a scan, with its text layer's characters and boxes."""
    import pypdfium2 as pdfium

    pdf, page = label.rsplit("#", 1)
    doc = pdfium.PdfDocument(pdf)
    try:
        p = doc[int(page) - 1]
        scale = GRID_PAGE_WIDTH_PX / p.get_size()[0]  # as ingestion renders a scan for the reader
        image = p.render(scale=scale).to_pil().convert("RGB")
        chars, boxes = text_layer(p, scale)
    finally:
        doc.close()
    return image, chars, boxes


def typed_canvases(text: str, cfg: Any) -> list[np.ndarray]:
    """``text`` on the grid in canvases of ``max_rows`` rows (what typing the page's lines in order gives)."""
    per = cfg.columns * cfg.max_rows
    out = []
    for start in range(0, len(text), per):
        rows, used = render_grid(text[start:start + per], cfg.columns, cfg.max_rows, ink=cfg.ink,
                                 background=cfg.background)
        out.append(np.repeat(rows[: max(used, 1) * GLYPH, :, None], 3, axis=2))
    return out


def page_views(label: str, cfg: Any) -> dict[str, tuple[list[np.ndarray], bool]]:
    """View name -> (canvases, through the page stem) for one page; see the module's docstring."""
    image, chars, boxes = render(label)
    grey, paper, bands, _ = split_page(image)
    strips = [line_strip(grey, paper, band) for band in bands]
    matched: list[tuple[PageLine, tuple[int, int, int, int]]] = []
    for strip, band in zip(strips, bands, strict=True):
        line = match_line(chars, boxes, strip, band)
        if line is not None:
            matched.append((line, band))
    drawn: list[Strip] = []
    for line, (top, bottom, _, _) in matched:  # at the line's height, capped: a tall band is a boxed figure
        g, _ = draw_line(line.text, Style(font=DRAW_FONT, size=min(48, max(9, bottom - top)), width=10**6),
                         random.Random(0))
        level = paper_level(g)
        box = ink_box(g, level)
        if box is not None:
            drawn.append(line_strip(g, level, box))

    def canvases(ss: list[Strip]) -> list[np.ndarray]:
        return fold(ribbon(ss, cfg.background)[0], cfg.columns, cfg.max_rows, cfg.background) if ss else []

    typed = typed_canvases(" ".join(line.text for line, _ in matched).lower(), cfg)
    return {"P_all": (canvases(strips), True), "P": (canvases([line.strip for line, _ in matched]), True),
            "F": (canvases(drawn), True), "U_page": (typed, True), "U": (typed, False)}


def canvas_vectors(module: Any, canvases: Sequence[np.ndarray], page: bool) -> np.ndarray:
    """Unit vectors ``(n, dim)`` of canvases read as page strips (``page``) or as typed text; a zero row for none."""
    if not canvases:
        return np.zeros((1, module.get_embedding_dimension()), np.float32)
    return module.embed_canvases(canvases, [page] * len(canvases), batch_size=16)


def window_starts(rows: int, window: int, stride: int) -> list[int]:
    """First rows of windows ``window`` rows tall, ``stride`` apart, over ``rows`` rows; the tail is covered by a
    last full window (a page shorter than a window is one window)."""
    if rows <= window:
        return [0]
    starts = list(range(0, rows - window + 1, stride))
    return starts if starts[-1] + window >= rows else starts + [rows - window]


def window_vectors(module: Any, pixels: np.ndarray, columns: int, window: int, background: int,
                   strides: Sequence[int] = STRIDES) -> dict[str, np.ndarray]:
    """The shipped fold's canvas vectors (``fold``) and, per stride, the vectors of overlapping windows."""
    rows = fold(pixels, columns, 1, background)  # one canvas a row
    shipped = fold(pixels, columns, window, background)
    starts = sorted({s for stride in strides for s in window_starts(len(rows), window, stride)})
    canvases = [np.concatenate(rows[s:s + window], axis=0) for s in starts]
    vectors = canvas_vectors(module, canvases, True)
    at = {s: i for i, s in enumerate(starts)}
    out = {"fold": canvas_vectors(module, shipped, True)}
    for stride in strides:
        out[f"s{stride}"] = vectors[[at[s] for s in window_starts(len(rows), window, stride)]]
    return out


def line_window_index(strips: Sequence[Strip], columns: int, window: int) -> np.ndarray:
    """For each of ``strips.line_windows``' windows, the line it begins in."""
    cells = [s.pixels.shape[1] // CELL_W for s in strips]
    return np.repeat(np.arange(len(strips)), [-(-c // (columns * window)) for c in cells])


def line_window_vectors(module: Any, strips: Sequence[Strip], columns: int, window: int, background: int,
                        fold_vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Windows of ``window`` rows that begin at a text line's first cell (``lines``), the product's line windows
    (``lines2``, ``strips.line_windows``: also a window every ``window`` rows inside a longer line, so no cell is
    unread), the fold's canvases with ``lines`` (``lines+fold``), and the fold's canvases with the windows of
    one-row lines only (``short+fold``: headings, captions, the last line of a paragraph)."""
    vectors = canvas_vectors(module, line_windows(list(strips), columns, window, background), True)
    lines = vectors[np.unique(line_window_index(strips, columns, window), return_index=True)[1]]  # first windows
    short = lines[[k for k, s in enumerate(strips) if s.pixels.shape[1] // CELL_W <= columns]]
    return {"lines": lines, "lines2": vectors, "lines+fold": np.concatenate([fold_vectors, lines]),
            "short+fold": np.concatenate([fold_vectors, short])}


def weighted_score(q: np.ndarray, mean_of: np.ndarray, canvases: np.ndarray, weight: float) -> np.ndarray:
    """``weight * q.m + (1 - weight) * max_c q.c``: m the unit mean of ``mean_of``, c the rows of ``canvases``."""
    return weight * (q @ unit(mean_of.mean(0))) + (1 - weight) * (q @ canvases.T).max(1)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


def page_score(q: np.ndarray, canvases: np.ndarray, pooling: str) -> np.ndarray:
    """Scores ``(queries,)`` of one page given as its canvases' unit vectors ``(n, dim)``."""
    mean = unit(canvases.mean(0))
    if pooling == "mean":
        return q @ mean
    best = (q @ canvases.T).max(1)
    if pooling == "max":
        return best
    if pooling == "mean+max":  # = the best canvas stored as [mean, canvas] and searched with [q, q], cosine
        return (q @ mean + best) / 2
    if pooling == "max(mean,canvases)":  # = a multivector point [mean, canvases...] under Qdrant's MAX_SIM
        return np.maximum(q @ mean, best)
    if pooling == "canvas+mean":  # = one 384-d point a canvas, unit(canvas + mean), the page's best
        return (q @ unit(canvases + canvases.mean(0)).T).max(1)
    raise ValueError(f"unknown pooling {pooling!r}")


def pooled_scores(q: np.ndarray, pages: Sequence[dict[str, np.ndarray]], key: str, pooling: str) -> np.ndarray:
    """``(queries, pages)`` scores of pages given as their canvases' unit vectors under ``key``. A pooling
    ``w=0.35`` scores ``weighted_score`` with the mean of the page's ``fold`` canvases."""
    if not pages:
        return np.zeros((len(q), 0))
    if pooling.startswith("w="):
        weight = float(pooling[2:])
        return np.stack([weighted_score(q, v["fold"], v[key], weight) for v in pages], axis=1)
    return np.stack([page_score(q, v[key], pooling) for v in pages], axis=1)


def run(model: Any, sets: Sets, page_vectors: Callable[[str], dict[str, np.ndarray]],
        scorings: Sequence[tuple[str, str, str]]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Per set, per scoring name: per-query metrics. ``scorings``: (name, page vector key, pooling)."""
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for name, (pairs, max_queries, max_pages) in sets.items():
        with tempfile.TemporaryDirectory() as tiles:
            rset = ev.csr_set(pairs, max_queries=max_queries, seed=0, max_pages=max_pages, tile_dir=tiles,
                              **ev.page_options(model))
        q = model.encode([s.text for s in rset.queries], normalize_embeddings=True, batch_size=32)
        vectors = [page_vectors(label) for label in rset.targets or []]
        for scoring, key, pooling in scorings:
            m = ev.query_metrics(pooled_scores(q, vectors, key, pooling), rset.relevant, ks=(1,))
            out.setdefault(scoring, {})[name] = m
            sys.stdout.write(f"{name} {scoring}: R@1 {m['recall@1'].mean():.3f} / nDCG@10 "
                             f"{m['ndcg@10'].mean():.3f} ({m['recall@1'].sum():.0f} of {len(rset.queries)})\n")
            sys.stdout.flush()
    return out


def report(results: dict[str, dict[str, dict[str, np.ndarray]]], base: str) -> None:
    """Pooled figures of every scoring, paired against ``base``."""
    pooled = {s: np.concatenate([m["ndcg@10"] for m in sets.values()]) for s, sets in results.items()}
    for scoring, sets in results.items():
        hits = sum(float(m["recall@1"].sum()) for m in sets.values())
        mean, low, high = ev.paired_bootstrap(pooled[base], pooled[scoring])
        sys.stdout.write(f"pooled {scoring}: {hits:.0f} of {pooled[scoring].size} at rank 1, nDCG@10 "
                         f"{pooled[scoring].mean():.3f}; - {base}: {mean:+.4f} [{low:+.4f}, {high:+.4f}]\n")


Scoring = tuple[str, str, str]  # (name, page vector key, pooling)
Diagnostic = tuple[Callable[[list[Strip]], dict[str, np.ndarray]], list[Scoring], str]


def page_lines(label: str) -> list[Strip]:
    """A CSR target page's text lines as strips, as the product cuts them."""
    return document_strips(render(label)[0])


def tall_lines(strips: Sequence[Strip], tall: float) -> np.ndarray:
    """Indices of the lines at least ``tall`` times the page's median line height (headings, titles)."""
    heights = np.array([s.height for s in strips], float)
    return np.flatnonzero(heights >= tall * np.median(heights)) if heights.size else np.zeros(0, int)


def pooling_diagnostic(module: Any, cfg: Any, fresh: bool) -> Diagnostic:
    def vectors(strips: list[Strip]) -> dict[str, np.ndarray]:
        pixels = ribbon(strips, cfg.background)[0]
        return {str(r): canvas_vectors(module, fold(pixels, cfg.columns, r, cfg.background), True) for r in ROWS}
    return vectors, [(f"{r} rows {p}", str(r), p) for r in ROWS for p in POOLINGS], "20 rows mean"


def windows_diagnostic(module: Any, cfg: Any, fresh: bool) -> Diagnostic:
    def vectors(strips: list[Strip]) -> dict[str, np.ndarray]:
        return window_vectors(module, ribbon(strips, cfg.background)[0], cfg.columns, cfg.page_rows or cfg.max_rows,
                              cfg.background)
    scorings = [(f"stride {s} w={w}", f"s{s}", f"w={w}") for s in STRIDES for w in MEAN_WEIGHTS]
    return vectors, [("fold w=0.5", "fold", "w=0.5"), *scorings], "fold w=0.5"


def lines_diagnostic(module: Any, cfg: Any, fresh: bool) -> Diagnostic:
    rows = cfg.page_rows or cfg.max_rows

    def vectors(strips: list[Strip]) -> dict[str, np.ndarray]:
        out = window_vectors(module, ribbon(strips, cfg.background)[0], cfg.columns, rows, cfg.background,
                             strides=(5, 1) if fresh else (5,))
        out.update(line_window_vectors(module, strips, cfg.columns, rows, cfg.background, out["fold"]))
        return out
    keys = (("s1",) if fresh else ()) + LINE_KEYS
    scorings = [("fold w=0.5", "fold", "w=0.5"), *[(f"{k} w=0.5", k, "w=0.5") for k in keys],
                *[(f"{k} own mean", k, "mean+max") for k in ("lines", "lines2")]]
    return vectors, scorings, "fold w=0.5"


def window_rows_diagnostic(module: Any, cfg: Any, fresh: bool) -> Diagnostic:
    rows = cfg.page_rows or cfg.max_rows

    def vectors(strips: list[Strip]) -> dict[str, np.ndarray]:
        out = {"fold": canvas_vectors(module, fold(ribbon(strips, cfg.background)[0], cfg.columns, rows,
                                                   cfg.background), True)}
        for r in WINDOW_ROWS:
            out[str(r)] = canvas_vectors(module, line_windows(strips, cfg.columns, r, cfg.background), True)
        return out
    scorings = [(f"line windows of {r} rows", str(r), "w=0.5") for r in WINDOW_ROWS]
    return vectors, scorings, f"line windows of {rows} rows"


def headings_diagnostic(module: Any, cfg: Any, fresh: bool, tall_levels: Sequence[float] = TALL) -> Diagnostic:
    rows = cfg.page_rows or cfg.max_rows

    def vectors(strips: list[Strip]) -> dict[str, np.ndarray]:
        fold_vectors = canvas_vectors(module, fold(ribbon(strips, cfg.background)[0], cfg.columns, rows,
                                                   cfg.background), True)
        windows = canvas_vectors(module, line_windows(strips, cfg.columns, rows, cfg.background), True)
        begins = line_window_index(strips, cfg.columns, rows)
        out = {"fold": fold_vectors, "lines2": windows}
        for tall in tall_levels:
            heads = tall_lines(strips, tall)
            alone = single_line_windows(strips, cfg.columns, rows, tall, cfg.background)  # the product's
            out[f"+alone {tall}"] = np.concatenate([windows, canvas_vectors(module, alone, True)]) if alone \
                else windows
            for gain in HEAD_GAINS:  # a heading window's point (m + g c) / 2: scored 0.5 q.m + 0.5 g q.c
                out[f"gain {tall} {gain}"] = windows * np.where(np.isin(begins, heads), gain, 1.0)[:, None]
        return out
    scorings = [("lines2 w=0.5", "lines2", "w=0.5"),
                *[(f"{t} alone w=0.5", f"+alone {t}", "w=0.5") for t in tall_levels],
                *[(f"{t} gain {g} w=0.5", f"gain {t} {g}", "w=0.5") for t in tall_levels for g in HEAD_GAINS]]
    return vectors, scorings, "lines2 w=0.5"


DIAGNOSTICS = {"pooling": pooling_diagnostic, "windows": windows_diagnostic, "lines": lines_diagnostic,
               "window-rows": window_rows_diagnostic, "headings": headings_diagnostic}


def main(argv: Sequence[str] | None = None) -> int:
    import vc2l_retriever

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("diagnostic", choices=("views", *DIAGNOSTICS))
    parser.add_argument("model")
    parser.add_argument("--fresh", action="store_true", help="queries no decision has seen (not views)")
    parser.add_argument("--save", help="per-query metrics to this .npz")
    parser.add_argument("--data", default="data")
    parser.add_argument("--sets", default="ood,ood2,in-domain", help="comma-separated CSR set names")
    parser.add_argument("--tall", default=",".join(map(str, TALL)),
                        help="headings: comma-separated heights over the page's median that make a heading")
    args = parser.parse_args(argv)
    model = vc2l_retriever.load(args.model)
    module, cfg = model[0], model[0].config.render
    sets = fresh_sets(args.data) if args.fresh else csr_sets(args.data)
    sets = {name: sets[name] for name in args.sets.split(",")}
    if args.diagnostic == "views":
        def views(label: str) -> dict[str, np.ndarray]:
            return {view: canvas_vectors(module, *drawn) for view, drawn in page_views(label, cfg).items()}
        results = run(model, sets, views, [(view, view, "mean") for view in VIEWS])
        base = "P_all"
    else:
        extra = {"tall_levels": [float(t) for t in args.tall.split(",")]} if args.diagnostic == "headings" else {}
        of_strips, scorings, base = DIAGNOSTICS[args.diagnostic](module, cfg, args.fresh, **extra)

        def vectors(label: str) -> dict[str, np.ndarray]:
            strips = page_lines(label)
            if strips:
                return of_strips(strips)
            empty = canvas_vectors(module, [], True)  # a blank page: a zero vector under every key
            return {key: empty for key in {"fold", *(key for _, key, _ in scorings)}}
        results = run(model, sets, vectors, scorings)
    report(results, base)
    if args.save:
        np.savez(args.save, **{f"{s}/{n}/{k}": v for s, sets_ in results.items() for n, m in sets_.items()
                               for k, v in m.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
