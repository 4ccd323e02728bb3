"""Lines of real PDF pages, cut as the page path cuts them, with the character under every cell (issue 17).

Real documents are set in fonts, sizes, kerning and ligatures that Pillow-drawn text does not have. pdfium
gives every character of a PDF's text layer with its box, so a page of a *training* manual's PDF, rendered at a
random resolution and cut into lines by ``vc2l_retriever/strips.py`` exactly as a scan would be, knows the
character under each cell of its strips: the same dense self-distillation target as ``font_strips.py`` draws
from its own text. The text layer is only read in training; the model never sees it.

A sample is a run of consecutive lines of one page (their texts joined by single spaces) up to a character cap.
Sample ``i`` reads page ``i // SAMPLES_PER_PAGE`` of a deterministic page schedule, so a batch touches few pages;
each page's lines are cached once cut.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vc2l_retriever.render import CELL_W
from vc2l_retriever.strips import Strip, line_strip, ribbon, split_page

SAMPLES_PER_PAGE = 8
DPI_CHOICES = (72, 80, 96, 110, 125, 150)  # ingestion renders ~80 dpi tiles, scans come at 150 or more


@dataclass(frozen=True)
class PageLine:
    """One cut line: its strip, its text (single spaces) and, per strip column, the index of its character."""

    strip: Strip
    text: str
    column_char: np.ndarray


def text_layer(page: object, scale: float) -> tuple[list[str], np.ndarray]:
    """Every character of a pdfium page's text layer and its pixel box ``(x0, y0, x1, y1)`` at ``scale``, y down."""
    import pypdfium2.raw as pdfium_c

    textpage = page.get_textpage()  # type: ignore[attr-defined]
    try:
        n, height = textpage.count_chars(), page.get_height()  # type: ignore[attr-defined]
        chars, boxes = [], np.zeros((n, 4), np.float64)
        for i in range(n):
            code = pdfium_c.FPDFText_GetUnicode(textpage, i)
            chars.append("\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code))  # UTF-16 halves of astral characters
            left, bottom, right, top = textpage.get_charbox(i, loose=False)
            boxes[i] = (left * scale, (height - top) * scale, right * scale, (height - bottom) * scale)
    finally:
        textpage.close()
    return chars, boxes


def match_line(chars: list[str], boxes: np.ndarray, strip: Strip, band: tuple[int, int, int, int]) -> PageLine | None:
    """The characters whose centres fall in ``band``, in x order, spaced as drawn, matched to strip columns."""
    top, bottom, left, right = band
    cy, cx = (boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2
    inside = np.flatnonzero((cy >= top) & (cy < bottom) & (cx >= left - 1) & (cx <= right + 1)
                            & (boxes[:, 2] > boxes[:, 0]))
    inside = [i for i in inside[np.argsort(cx[inside], kind="stable")] if chars[i].strip()]
    if not inside:
        return None
    text, spans = "", []
    gap = 0.25 * (bottom - top)  # a wider gap between two glyphs is a word break
    for n, i in enumerate(inside):
        if n and boxes[i, 0] - boxes[inside[n - 1], 2] > gap:
            spans.append((boxes[inside[n - 1], 2], boxes[i, 0]))  # the space spans the gap
            text += " "
        spans.append((boxes[i, 0], boxes[i, 2]))
        text += chars[i]
    spans_a = np.array(spans)
    x = strip.source_x
    hit = (spans_a[None, :, 0] <= x[:, None]) & (x[:, None] < spans_a[None, :, 1])
    column_char = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
    return PageLine(strip=strip, text=text, column_char=column_char)


@lru_cache(maxsize=16)
def page_lines(pdf: str, page_index: int, dpi: int) -> tuple[PageLine, ...]:
    """Page ``page_index`` of ``pdf`` rendered at ``dpi`` and cut into lines (empty if it cannot be read)."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(pdf)
    except (pdfium.PdfiumError, OSError):
        return ()
    try:
        page = doc[page_index]
        scale = dpi / 72
        image = page.render(scale=scale).to_pil()
        chars, boxes = text_layer(page, scale)
        grey, paper, bands, _ = split_page(image)
        lines = [match_line(chars, boxes, line_strip(grey, paper, band), band) for band in bands]
        return tuple(line for line in lines if line is not None)
    except (pdfium.PdfiumError, IndexError):
        return ()
    finally:
        doc.close()


class PdfLines:
    """Deterministic samples of consecutive lines from a list of PDFs (``(pdf, pages)`` pairs)."""

    def __init__(self, pdfs: Sequence[tuple[str, int]], seed: int) -> None:
        if not pdfs:
            raise ValueError("no PDFs to draw lines from")
        self.pdfs, self.seed = list(pdfs), seed

    def sample(self, index: int, max_chars: int) -> tuple[str, np.ndarray, np.ndarray] | None:
        """``(text, ribbon pixels (16, W), per-cell character index)`` for sample ``index``, or ``None`` when its
        page has no text lines (a figure-only page)."""
        page_rng = random.Random(self.seed * 7_919 + index // SAMPLES_PER_PAGE)
        pdf, pages = self.pdfs[page_rng.randrange(len(self.pdfs))]
        lines = page_lines(pdf, page_rng.randrange(pages), page_rng.choice(DPI_CHOICES))
        if not lines:
            return None
        rng = random.Random(self.seed * 104_729 + index)
        start = rng.randrange(len(lines))
        picked, offsets, length = [], [], 0
        for line in lines[start:]:
            if picked and length + 1 + len(line.text) > max_chars:
                break
            offsets.append(length + (1 if picked else 0))
            length = offsets[-1] + len(line.text)
            picked.append(line)
        text = " ".join(line.text for line in picked)[:max_chars]
        if sum(ch.isalpha() for ch in text) < 0.5 * len(text):  # a table of numbers or a garbled text layer
            return None
        pixels, place = ribbon([line.strip for line in picked])
        centres = place[CELL_W // 2::CELL_W]
        cell_char = np.full(len(centres), -1, np.int64)
        for c, (k, x) in enumerate(centres.tolist()):
            if k < 0:
                continue
            line = picked[int(k)]
            col = int(np.clip(np.searchsorted(line.strip.source_x, x), 0, line.column_char.size - 1))
            j = int(line.column_char[col])
            if j >= 0 and offsets[int(k)] + j < len(text):
                cell_char[c] = offsets[int(k)] + j
        return text, pixels, cell_char


__all__ = ["PageLine", "PdfLines", "match_line", "page_lines", "text_layer"]
