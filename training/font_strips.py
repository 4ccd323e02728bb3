"""Text drawn in real fonts and cut into line strips, with the character under every cell (issue 17).

The reader knows Unifont on a grid. To read pages it must learn other fonts, sizes, weights and blur, cut into
lines as ``vc2l_retriever/strips.py`` cuts a page. Here a training text is wrapped to a random line width, each line
is drawn with Pillow in a random TrueType font at a random size, grey levels and blur, and sent through the very
function that cuts page lines (:func:`~vc2l_retriever.strips.line_strip`). Pillow's advances say where each
character was drawn, so every cell of the resulting ribbon knows the character under its centre: the training
target for that cell is what the Unifont reader's stem says about the same character on the grid
(self-distillation, ``dense_train.py``'s ``strip`` term).

Fonts are files, named in the recipe: Debian's ``fonts-dejavu-core``/``fonts-dejavu-extra`` and
``fonts-liberation`` (or ``fonts-liberation2``) are what the recipes use; held-out fonts (never trained on) score the
probes.
"""

from __future__ import annotations

import glob
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from vc2l_retriever.render import CELL_W
from vc2l_retriever.strips import INK_CONTRAST, Strip, fold, line_strip, paper_level, ribbon, to_grey


@dataclass(frozen=True)
class Style:
    """How one text is drawn: font file, size in px, line width in px, grey levels, blur radius, noise sigma."""

    font: str
    size: int
    width: int
    ink: int = 0
    paper: int = 255
    blur: float = 0.0
    noise: float = 0.0


def font_files(patterns: Sequence[str]) -> list[str]:
    """The TrueType files matching ``patterns`` (globs), sorted; an error naming the patterns if none match."""
    files = sorted({f for p in patterns for f in glob.glob(p)})
    if not files:
        raise FileNotFoundError(f"no font file matches {list(patterns)} (install fonts-dejavu-core, "
                                "fonts-liberation2)")
    return files


def random_style(fonts: Sequence[str], rng: random.Random) -> Style:
    """A style drawn from the training distribution: body sizes from ~80-dpi renders up to large headings."""
    size = rng.choice([9, 10, 11, 12, 13, 14, 16, 18, 20, 24, 28, 36])
    dark = rng.random() < 0.85  # dark ink on light paper, else light text on a dark background
    ink, paper = (rng.randint(0, 90), rng.randint(190, 255)) if dark else (rng.randint(190, 255), rng.randint(0, 70))
    return Style(font=rng.choice(list(fonts)), size=size, width=int(size * rng.uniform(18, 45)), ink=ink,
                 paper=paper, blur=rng.choice([0.0, 0.0, 0.4, 0.7]), noise=rng.choice([0.0, 0.0, 4.0, 10.0]))


@lru_cache(maxsize=64)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[tuple[int, str]]:
    """Greedy word wrap by drawn width: ``[(offset in text, line), ...]``; a word wider than a line stands alone."""
    lines: list[tuple[int, str]] = []
    start, pos = 0, 0
    line_end = 0  # end of the last word that fits on the current line
    while pos <= len(text):
        nxt = text.find(" ", pos)
        nxt = len(text) if nxt < 0 else nxt
        if line_end > start and font.getlength(text[start:nxt]) > width:
            lines.append((start, text[start:line_end]))
            start = line_end + 1  # the space at the wrap is not drawn
        line_end = nxt
        pos = nxt + 1
    if start < len(text):
        lines.append((start, text[start:]))
    return lines


def draw_line(line: str, style: Style, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """One line drawn on its own paper: the grey image and each character's ``[x0, x1)`` (``(n, 2)``)."""
    font = _font(style.font, style.size)
    pad = style.size // 2 + 2
    advance = np.array([font.getlength(line[:k]) for k in range(len(line) + 1)], np.float64) + pad
    ascent, descent = font.getmetrics()
    image = Image.new("L", (int(advance[-1]) + 2 * pad, ascent + descent + 2 * pad), style.paper)
    ImageDraw.Draw(image).text((pad, pad), line, fill=style.ink, font=font)
    if style.blur:
        image = image.filter(ImageFilter.GaussianBlur(style.blur))
    grey = to_grey(image)
    if style.noise:
        grey = np.clip(grey + np.random.default_rng(rng.getrandbits(32)).normal(0, style.noise, grey.shape), 0, 255)
    return grey, np.stack([advance[:-1], advance[1:]], axis=1)


def ink_box(grey: np.ndarray, paper: float) -> tuple[int, int, int, int] | None:
    ink = np.abs(grey - paper) > INK_CONTRAST  # the page path's notion of ink
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def text_ribbon(text: str, style: Style, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """``text`` drawn in ``style`` as the page path cuts it: ribbon pixels ``(16, W)`` and, per cell, the index of
    the character under its centre (-1: none; the blank cell after a wrapped line is the space it replaced)."""
    strips: list[Strip] = []
    boxes: list[tuple[int, np.ndarray]] = []  # (offset of the line in text, its characters' x boxes)
    for offset, line in wrap(text, _font(style.font, style.size), style.width):
        grey, chars = draw_line(line, style, rng)
        paper = paper_level(grey)
        box = ink_box(grey, paper)
        if box is None:  # only spaces or glyphs the font lacks
            continue
        strips.append(line_strip(grey, paper, box))
        boxes.append((offset, chars))
    pixels, place = ribbon(strips)
    centres = place[CELL_W // 2::CELL_W]  # (cells, 2): strip index and source x under each cell's centre
    cell_char = np.full(len(centres), -1, np.int64)
    for c, (k, x) in enumerate(centres.tolist()):
        if k < 0:  # the gap after a line: the space it stands for, if the text goes on
            prev = int(centres[c - 1, 0]) if c else -1
            if 0 <= prev < len(boxes) - 1:
                cell_char[c] = boxes[prev + 1][0] - 1
            continue
        offset, chars = boxes[int(k)]
        hit = np.flatnonzero((chars[:, 0] <= x) & (x < chars[:, 1]))
        if hit.size:
            cell_char[c] = offset + int(hit[0])
    return pixels, cell_char


def text_canvases(texts: Sequence[str], styles: Sequence[Style], columns: int, seed: int
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each text as one canvas (all its rows) and its per-cell character index."""
    canvases, chars = [], []
    for k, (text, style) in enumerate(zip(texts, styles, strict=True)):
        pixels, cell_char = text_ribbon(text, style, random.Random(seed * 1_000_003 + k))
        canvases.append(fold(pixels, columns, max_rows=1 << 30)[0])
        chars.append(cell_char)
    return canvases, chars


__all__ = ["Style", "draw_line", "font_files", "ink_box", "random_style", "text_canvases", "text_ribbon", "wrap"]
