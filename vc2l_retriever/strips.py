"""Document pixels -> the reader's grid: text lines found by their ink, scaled to glyph height, laid end to end.

The reader learned to read Unifont glyphs, one per 8x16 cell (``render.py``'s ``grid`` layout). A scanned page, a
screenshot or a PDF page rendered to pixels has other fonts at other sizes, nowhere near that grid, and shrinking a
page into one 224-px tile leaves nothing legible. This module re-lays such an image for the reader without
recognising a single character:

1. **Lines** (:func:`find_lines`): rows of the image holding ink (the horizontal projection profile) form bands;
   each band is one text line, cropped to its ink.
2. **Glyph cells** (:func:`line_strip`): a band is scaled to 16 px high (one glyph's height) in the grid's tones
   (ink 0, paper 127) and cut at its blank columns: each run of inked columns becomes one 8x16 cell (a run wider
   than a glyph, letters that touch, is split evenly), and each gap as wide as a word space one blank cell. This
   is segmentation, not recognition: no glyph is ever identified; the cells just hold whole glyphs, as the grid's
   do, instead of slices at any phase (slices were tried first and did not train: lab notebook, probe s1).
3. **Ribbon** (:func:`ribbon`): the strips, one blank cell between lines, are laid end to end in reading
   order and folded into canvas rows of the grid's width, ``max_rows`` rows a canvas (:func:`fold`; the index
   also reads windows that begin at each line, :func:`line_windows`). The reader reads them exactly as it reads
   grid text.

A page's lines, or only its headings (lines taller than its median line), are also read alone
(:func:`single_line_windows`): a line window dilutes a heading with the body under it, and the scaling to 16 px
hides its size. A figure or screenshot whose text shares its rows with pictures is not cut by the row profile
but by :func:`figure_lines`, which finds glyph-shaped ink against the local background and joins it along rows
into labels.

Training draws text in real fonts and sends it through the same :func:`line_strip` (``training/font_strips.py``),
so what the reader learns from is cut exactly as a page is. Bands much taller than the page's text lines (figures,
boxed tables) are not text: :func:`find_lines` leaves them out, and :func:`split_page` returns them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from vc2l_retriever.render import CELL_W, GLYPH

INK_CONTRAST = 48.0  # grey levels between a pixel and the paper for it to count as ink
MIN_LINE_PX = 4  # shorter bands are rules or specks, not text
TALL_LINE = 3.0  # a band this many times the page's typical line height is a figure, not a line
GLYPH_SPLIT = 0.4  # a column holds ink if one of its pixels is this dark (0..1 of the line's strongest ink)
SPACE_GAP = 0.22  # a blank run wider than this many line heights is a word space
GLYPH_WIDTH = 0.62  # an ink run about this many line heights wide is one glyph; wider runs are split evenly
MIN_DOCUMENT_LINES = 3  # an image read as a document has at least this many text lines...
MIN_TEXT_INK = 0.5  # ...and at least this share of its inked area in them
HEADING_HEIGHT = 1.15  # a heading is a line at least this many times the page's median line height
GLYPH_PX = (5, 64)  # a figure's glyph (a connected piece of ink) is this many pixels tall, ends included...
GLYPH_ASPECT = 4.0  # ...and at most this many times as wide as it is tall (wider: a rule, an axis, a curve)
LABEL_GAP = 1.0  # glyphs of one label are at most this many glyph heights apart along the row
MIN_LABEL_GLYPHS = 2  # a label has at least this many glyphs (a lone piece of ink is a marker or a tick)
STROKE_PX = 9  # strokes thinner than this are ink against their local background (a glyph, not a panel)
FLAT_BACKGROUND = 24  # a label's background varies by at most this many grey levels (a panel, not a photo)


@dataclass(frozen=True)
class Strip:
    """One text line as glyph cells in the grid's tones: ``pixels (16, 8n)`` uint8, ``source_x (8n,)``, the x
    in the source image that each pixel column came from (training uses it to know which character a cell holds),
    and ``height``, the line's height in the source image (every strip is 16 px; a heading was taller)."""

    pixels: np.ndarray
    source_x: np.ndarray
    height: float = 0.0


def to_grey(image: Image.Image | np.ndarray) -> np.ndarray:
    """Luminance as ``float32 (H, W)``."""
    if isinstance(image, np.ndarray):
        a = image.astype(np.float32)
        return a if a.ndim == 2 else a[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.asarray(image.convert("L"), dtype=np.float32)


def paper_level(grey: np.ndarray) -> float:
    """The paper's grey level: the median of the image's outer frame (pages have margins; a figure may cover
    most of the page, so the median of all pixels would not do)."""
    frame = np.concatenate([grey[:2].ravel(), grey[-2:].ravel(), grey[:, :2].ravel(), grey[:, -2:].ravel()])
    return float(np.median(frame))


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the True runs of a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _bands(ink: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Every ink band ``(top, bottom, left, right)`` at least :data:`MIN_LINE_PX` high, top to bottom."""
    out = []
    for top, bottom in _runs(ink.any(axis=1)):
        if bottom - top < MIN_LINE_PX:
            continue
        cols = np.flatnonzero(ink[top:bottom].any(axis=0))
        out.append((top, bottom, int(cols[0]), int(cols[-1]) + 1))
    return out


def split_page(image: Image.Image | np.ndarray) -> tuple[np.ndarray, float, list, list]:
    """``(grey, paper level, text line boxes, figure boxes)`` of an image, boxes as ``(top, bottom, left, right)``."""
    grey = to_grey(image)
    paper = paper_level(grey)
    bands = _bands(np.abs(grey - paper) > INK_CONTRAST)
    if not bands:
        return grey, paper, [], []
    typical = float(np.median([b - t for t, b, _, _ in bands]))
    lines = [band for band in bands if band[1] - band[0] <= TALL_LINE * typical]
    figures = [band for band in bands if band[1] - band[0] > TALL_LINE * typical]
    return grey, paper, lines, figures


def find_lines(image: Image.Image | np.ndarray) -> list[tuple[int, int, int, int]]:
    """Text lines of a page image as ``(top, bottom, left, right)`` boxes, in reading order (one column)."""
    return split_page(image)[2]


def line_strip(grey: np.ndarray, paper: float, box: tuple[int, int, int, int]) -> Strip:
    """The band ``box`` of ``grey`` cut into glyph cells: one 8x16 cell for each run of inked columns (split in
    two or more when wider than a glyph), one blank cell for each gap as wide as a word space.

    Like the grid, where every character has its own cell, so the stem's per-cell glyph embedding sees whole
    glyphs at a fixed position instead of slices at any phase. Each glyph keeps the line's scale (16 px = the
    band's height) and is centred in its cell; a glyph wider than a cell is squeezed into it. ``source_x`` of a
    cell's eight columns is the centre of the source columns it came from.
    """
    top, bottom, left, right = box
    crop = np.abs(grey[top:bottom, left:right] - paper)
    ink = np.clip(crop / max(float(crop.max()), 2 * INK_CONTRAST), 0.0, 1.0)
    height = bottom - top
    scale = GLYPH / height
    cells: list[np.ndarray] = []
    centres: list[float] = []
    runs = _runs((ink > GLYPH_SPLIT).any(axis=0))
    for k, (start, stop) in enumerate(runs):
        if k and start - runs[k - 1][1] > SPACE_GAP * height:  # a word space: one blank cell
            cells.append(np.full((GLYPH, CELL_W), 127, np.uint8))
            centres.append(left + (runs[k - 1][1] + start) / 2)
        pieces = max(1, round((stop - start) / (GLYPH_WIDTH * height)))
        edges = np.linspace(start, stop, pieces + 1)
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            x0, x1 = int(round(a)), max(int(round(b)), int(round(a)) + 1)
            width = min(CELL_W, max(1, round((x1 - x0) * scale)))
            glyph = Image.fromarray(np.round(127.0 * (1.0 - ink[:, x0:x1])).astype(np.uint8))
            glyph = np.asarray(glyph.resize((width, GLYPH), Image.Resampling.BILINEAR), dtype=np.uint8)
            cell = np.full((GLYPH, CELL_W), 127, np.uint8)
            offset = (CELL_W - width) // 2
            cell[:, offset:offset + width] = glyph
            cells.append(cell)
            centres.append(left + (x0 + x1) / 2)
    if not cells:
        return Strip(pixels=np.full((GLYPH, CELL_W), 127, np.uint8), source_x=np.full(CELL_W, left + 0.5),
                     height=height)
    return Strip(pixels=np.concatenate(cells, axis=1), source_x=np.repeat(np.array(centres), CELL_W), height=height)


def ribbon(strips: list[Strip], background: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Strips end to end, one blank cell after each, padded to whole cells: ``(16, W)`` pixels and, per pixel
    column, ``(strip index, source x)`` as a ``(W, 2)`` float array (-1 where a column is a gap)."""
    parts, where = [], []
    for k, strip in enumerate(strips):
        parts += [strip.pixels, np.full((GLYPH, CELL_W), background, np.uint8)]
        where += [np.stack([np.full(strip.source_x.size, k, np.float64), strip.source_x], 1),
                  np.full((CELL_W, 2), -1.0)]
    if not parts:
        return np.full((GLYPH, CELL_W), background, np.uint8), np.full((CELL_W, 2), -1.0)
    pixels, place = np.concatenate(parts, axis=1), np.concatenate(where)
    pad = -pixels.shape[1] % CELL_W
    pixels = np.pad(pixels, ((0, 0), (0, pad)), constant_values=background)
    return pixels, np.pad(place, ((0, pad), (0, 0)), constant_values=-1.0)


def fold(pixels: np.ndarray, columns: int, max_rows: int, background: int = 127) -> list[np.ndarray]:
    """A ribbon ``(16, W)`` folded into RGB canvases of ``columns`` cells a row and at most ``max_rows`` rows."""
    width = columns * CELL_W
    pad = -pixels.shape[1] % width
    rows = np.pad(pixels, ((0, 0), (0, pad)), constant_values=background)
    rows = rows.reshape(GLYPH, -1, width).transpose(1, 0, 2)  # (rows, 16, width)
    canvases = []
    for start in range(0, rows.shape[0], max_rows):
        grey = rows[start:start + max_rows].reshape(-1, width)
        canvases.append(np.repeat(grey[..., None], 3, axis=2))
    return canvases


def line_windows(strips: list[Strip], columns: int, max_rows: int, background: int = 127) -> list[np.ndarray]:
    """The ribbon of ``strips`` read in windows of ``max_rows`` rows that begin at each line's first cell, and
    again every ``max_rows`` rows inside a line longer than a window, so every cell is in a window.

    Windows overlap (a window runs on into the lines after its own). That is the point: a heading and the lines
    under it are one canvas wherever the heading falls, where :func:`fold` cuts every ``max_rows`` rows and splits
    them by chance. Lab notebook (issue 17): 137 pages found at rank 1 from a title against 121; a page of many
    short lines (GnuCash's guide) gets about twice as many windows as canvases.
    """
    pixels = ribbon(strips, background)[0]
    per = columns * max_rows  # cells a window
    starts, first = [], 0
    for strip in strips:
        cells = strip.pixels.shape[1] // CELL_W
        starts += range(first, first + cells, per)
        first += cells + 1  # the blank cell between lines
    return [fold(pixels[:, a * CELL_W:(a + per) * CELL_W], columns, max_rows, background)[0] for a in starts]


def single_line_windows(strips: list[Strip], columns: int, max_rows: int, tall: float = 0.0,
                        background: int = 127) -> list[np.ndarray]:
    """Each line at least ``tall`` times the page's median line height (every line at 0; headings at
    :data:`HEADING_HEIGHT`) read alone, folded into canvases.

    A line window holds four more rows after its line, and every strip is scaled to 16 px, so the page stem never
    sees that a heading is big. A title query matches a heading read alone far better: lab notebook (issue 17),
    "Headings' size as a cue", 230 of 401 pages at rank 1 with the headings alone, 239 with every line, 137 with
    neither.
    """
    if not strips:
        return []
    median = float(np.median([s.height for s in strips]))
    return [canvas for s in strips if s.height >= tall * median
            for canvas in fold(s.pixels, columns, max_rows, background)]


def _glyph_boxes(ink: np.ndarray) -> np.ndarray:
    """Connected pieces of ink shaped like glyphs, as rows ``(top, bottom, left, right)``."""
    from scipy import ndimage

    labels, _ = ndimage.label(ink, structure=np.ones((3, 3), bool))
    boxes = np.array([(s[0].start, s[0].stop, s[1].start, s[1].stop) for s in ndimage.find_objects(labels)],
                     dtype=np.int64).reshape(-1, 4)
    heights, widths = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    glyphs = (heights >= GLYPH_PX[0]) & (heights <= GLYPH_PX[1]) & (widths <= GLYPH_ASPECT * heights)
    return boxes[glyphs]


def _labels(glyphs: np.ndarray) -> list[list[int]]:
    """Glyph boxes joined left to right into labels ``[top, bottom, left, right, glyphs]``: a glyph joins a label
    it overlaps vertically by half the smaller height, of a height within 2x, at most :data:`LABEL_GAP` heights
    to its right."""
    labels: list[list[int]] = []  # each [top, bottom, left, right, glyphs]
    open_: list[list[int]] = []  # the labels a glyph further right can still join
    reach = int(LABEL_GAP * 2 * GLYPH_PX[1])  # no label is joined across a wider gap
    for top, bottom, left, right in glyphs[np.argsort(glyphs[:, 2], kind="stable")].tolist():
        open_ = [label for label in open_ if left - label[3] <= reach]
        height = bottom - top
        for label in open_:
            t, b, _, r, _ = label
            overlap = min(bottom, b) - max(top, t)
            if (overlap >= 0.5 * min(height, b - t) and max(height, b - t) <= 2 * min(height, b - t)
                    and left - r <= LABEL_GAP * max(height, b - t)):
                label[:] = [min(t, top), max(b, bottom), label[2], max(r, right), label[4] + 1]
                break
        else:
            labels.append([top, bottom, left, right, 1])
            open_.append(labels[-1])
    return [label for label in labels if label[4] >= MIN_LABEL_GLYPHS]


def figure_lines(image: Image.Image | np.ndarray) -> tuple[np.ndarray, list[tuple[tuple[int, int, int, int], float]]]:
    """``(grey, [(label box, its paper level), ...])`` of a figure or screenshot, labels in reading order.

    A plot's tick labels, legend and titles share their rows with curves and axes, and a screenshot's text sits
    on panels, fields and toolbars of several shades, so :func:`split_page`'s row profile against one paper
    level returns such an image as one or two tall bands. Here text is found locally instead:

    - ink is measured against the *local* background, in both polarities: a grey closing (a max then a min
      filter :data:`STROKE_PX` wide) wipes out dark strokes and leaves the light panel they sit on, an opening
      does the same for light text on dark panels, so a glyph is ink wherever it is drawn;
    - pieces of ink shaped like glyphs are joined along their row into labels (:func:`_labels`); curves, frames,
      rules and pictures are too large or too long to be glyphs and are left out;
    - a label whose background is not flat (a photo's texture) is not text and is dropped, and of two labels
      that overlap, the one with fewer glyphs (the gaps between the other's letters, seen in reverse) is dropped.

    Labels are read in rows, top to bottom, each row left to right.
    """
    from scipy import ndimage  # only figures need it: imported here, not at start-up

    grey = to_grey(image)
    levels = np.clip(np.rint(grey), 0, 255).astype(np.uint8)  # the filters run twice as fast on bytes
    candidates = []
    for background, sign in ((ndimage.grey_closing(levels, size=STROKE_PX).astype(np.float32), 1.0),
                             (ndimage.grey_opening(levels, size=STROKE_PX).astype(np.float32), -1.0)):
        for top, bottom, left, right, glyphs in _labels(_glyph_boxes(sign * (background - grey) > INK_CONTRAST)):
            behind = background[top:bottom, left:right]
            if float(np.ptp(behind)) <= FLAT_BACKGROUND:
                candidates.append((glyphs, (top, bottom, left, right), float(np.median(behind))))
    # The gaps between dark letters are light "glyphs" against the opening (and the reverse): where labels of
    # the two polarities overlap, the one with more glyphs is the text.
    found: list[tuple[tuple[int, int, int, int], float]] = []
    for _, box, paper in sorted(candidates, key=lambda c: -c[0]):
        if not any(box[0] < b[1] and b[0] < box[1] and box[2] < b[3] and b[2] < box[3] for b, _ in found):
            found.append((box, paper))
    rows: list[list[tuple[tuple[int, int, int, int], float]]] = []
    for label in sorted(found, key=lambda f: (f[0][0] + f[0][1]) / 2):
        centre = (label[0][0] + label[0][1]) / 2
        if rows and rows[-1][0][0][0] <= centre <= rows[-1][0][0][1]:  # within the row's first label
            rows[-1].append(label)
        else:
            rows.append([label])
    return grey, [label for row in rows for label in sorted(row, key=lambda f: f[0][2])]


def figure_strips(image: Image.Image | np.ndarray) -> list[Strip]:
    """A figure's labels (:func:`figure_lines`) as strips, in reading order; empty when it has none."""
    grey, labels = figure_lines(image)
    return [line_strip(grey, paper, box) for box, paper in labels]


def document_strips(image: Image.Image | np.ndarray, require_document: bool = False) -> list[Strip]:
    """A page or screenshot -> its text lines as strips, top to bottom.

    Empty when no line is found, or, with ``require_document``, when the image does not look like a document:
    fewer than :data:`MIN_DOCUMENT_LINES` lines, or less than :data:`MIN_TEXT_INK` of its ink inside them (a
    photo's ink mostly falls in bands too tall to be lines).
    """
    grey, paper, lines, figures = split_page(image)
    if require_document:
        area = [(b - t) * (r - l) for t, b, l, r in lines]
        other = [(b - t) * (r - l) for t, b, l, r in figures]
        if len(lines) < MIN_DOCUMENT_LINES or sum(area) < MIN_TEXT_INK * (sum(area) + sum(other)):
            return []
    return [line_strip(grey, paper, box) for box in lines]


__all__ = ["HEADING_HEIGHT", "Strip", "document_strips", "figure_lines", "figure_strips", "find_lines", "fold",
           "line_strip", "line_windows", "ribbon", "single_line_windows", "split_page"]
