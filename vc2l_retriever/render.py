"""Snippet -> pixels: the only place text becomes an image. Pure numpy + Pillow, no torch.

Three layouts, all drawn with GNU Unifont 9.0.06 (the paper's font; atlas and licence in ``assets/``):

``official``
    The VC2L paper's 448x448 mosaic, reproduced pixel for pixel (``../shared/fixtures/vc2l_official_render``):
    text lower-cased and cut to ``max_chars`` code points, code points wrapped to 16 bits (so astral characters
    show as the BMP glyph the reference draws), each glyph trimmed to its ink plus one column on the left (at
    least 4 columns), greedy line breaking against ``224 - widest glyph``, 16-px rows, ink 0 on grey 127, and
    four 224x224 tiles (TL, TR, BL, BR) of which image tiles show an image and the others take the next 14 text
    rows. Images go to the last tiles, so text always starts top-left.
``compact``
    For the project's own small models: a 224-px-wide column of image tiles followed by text lines, whose
    height follows the content (rounded to ``patch`` pixels). A 40-character query costs one or two patch rows
    instead of a 448x448 canvas. Astral glyphs come from Unifont's upper planes instead of wrapping.
``grid``
    For the reader network (``reader.py``): like ``compact`` (image tiles, then text; height follows the
    content), but every character sits in a fixed 8x16 cell (wide glyphs in two), 28 cells a line, wrapped at
    the cell and not the word, whitespace runs collapsed to one space. Character ``k`` is therefore at a known
    cell (:func:`grid_cells`), a 16x32 patch holds exactly four characters, and reading order is row-major
    cell order, image tiles included (a 224x224 tile is 14 rows of 28 cells).

The renderer settings are saved with a model (``RenderConfig`` in its config), so a model always renders the
way it was trained.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from vc2l_retriever.inputs import ImageLike, Snippet, open_image

if TYPE_CHECKING:
    from vc2l_retriever.strips import Strip

logger = logging.getLogger(__name__)

_WHITESPACE_CONTROLS = {ord(c): " " for c in "\t\n\r\x0b\x0c"}
GLYPH = 16  # Unifont cells are 16x16 (half-width glyphs use the left 8 columns)
CELL_W = 8  # the grid layout's cell width: one half-width glyph
MIN_FIGURE_LABELS = 2  # fewer labels found in an image (a photo's specks, one tick) and it is drawn as a tile


@dataclass(frozen=True)
class RenderConfig:
    """How a snippet is drawn. Stored with every model.

    Attributes:
        layout: ``"official"`` (paper's 448x448 mosaic), ``"compact"`` (height follows the content) or
            ``"grid"`` (compact, with one fixed cell per character).
        max_chars: Text is cut to this many code points after lower-casing (768 in training, 1100 in the
            paper's retrieval evaluation).
        lowercase: Lower-case text before drawing (the paper does).
        tile: Side of an image tile and width of the text column, in pixels.
        rows_per_tile: Text rows in one official tile (224 / 16).
        max_rows: Compact and grid layouts: most text rows drawn (further text is dropped).
        max_images: Compact and grid layouts: most image tiles (official: up to 4, or 3 when there is text).
        patch: Compact and grid layouts: the canvas height is rounded up to a multiple of this.
        background: Grey level of the background.
        ink: Grey level of glyph pixels.
        page_rows: Grid layout: strip rows in one canvas of a page read line by line (0: ``max_rows``). Fewer
            rows give a page more, shorter canvases: more points for ``encode_points`` to store.
        page_windows: Grid layout: the canvases a page's points (``encode_points``) are read from. ``"fold"``:
            its canvases; ``"lines"``: windows of ``page_rows`` rows that begin at each text line's first cell
            (and again inside a longer line), so a heading always begins one. The page's one vector (``encode``)
            is the mean of its canvases either way.
        lines_alone: Grid layout, with ``page_windows="lines"``: which of a page's lines are also read alone, one
            more point each: ``"none"``, ``"headings"`` (lines at least ``strips.HEADING_HEIGHT`` times the
            page's median line height) or ``"all"``.
        figure_labels: Grid layout: an image that is not read as a document (too small, or failing the
            document test) is read from its labels when it has at least two (``strips.figure_lines``: a plot's
            titles, legend and axis labels, a screenshot's captions), else drawn as one tile.
    """

    layout: Literal["official", "compact", "grid"] = "official"
    max_chars: int = 768
    lowercase: bool = True
    tile: int = 224
    rows_per_tile: int = 14
    max_rows: int = 32
    max_images: int = 1
    patch: int = 16
    background: int = 127
    ink: int = 0
    page_rows: int = 0
    page_windows: Literal["fold", "lines"] = "fold"
    lines_alone: Literal["none", "headings", "all"] = "none"
    figure_labels: bool = False

    def __post_init__(self) -> None:
        if self.layout not in ("official", "compact", "grid"):
            raise ValueError(f"layout must be 'official', 'compact' or 'grid', got {self.layout!r}")
        if self.layout == "grid" and self.tile % CELL_W:
            raise ValueError(f"the grid layout needs a tile width divisible by {CELL_W}")
        if self.layout == "official" and (self.tile != 224 or self.rows_per_tile != 14):
            raise ValueError("the official layout is fixed at 224-px tiles of 14 rows")
        if not 0 <= self.page_rows <= self.max_rows:
            raise ValueError(f"page_rows must be between 0 (max_rows) and max_rows ({self.max_rows}), "
                             f"got {self.page_rows}")
        if self.page_windows not in ("fold", "lines"):
            raise ValueError(f"page_windows must be 'fold' or 'lines', got {self.page_windows!r}")
        if self.lines_alone not in ("none", "headings", "all"):
            raise ValueError(f"lines_alone must be 'none', 'headings' or 'all', got {self.lines_alone!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON configs. ``page_rows``, ``page_windows``, ``lines_alone`` and ``figure_labels`` at
        their defaults are left out: models saved before they existed keep the same config, so an index's
        fingerprint of them still matches."""
        data = asdict(self)
        for key, default in (("page_rows", 0), ("page_windows", "fold"), ("lines_alone", "none"),
                             ("figure_labels", False)):
            if data[key] == default:
                del data[key]
        return data

    @property
    def max_height(self) -> int:
        """Tallest canvas this config draws."""
        if self.layout == "official":
            return 2 * self.tile
        rows_px = self.max_rows * GLYPH
        height = self.max_images * self.tile + rows_px
        return -(-height // self.patch) * self.patch

    @property
    def width(self) -> int:
        """Canvas width in pixels."""
        return 2 * self.tile if self.layout == "official" else self.tile

    @property
    def columns(self) -> int:
        """Grid layout: character cells per line."""
        return self.tile // CELL_W


class _Font:
    """Unifont glyphs with their trim boxes, precomputed once for vectorised drawing."""

    def __init__(self) -> None:
        with resources.files("vc2l_retriever.assets").joinpath("unifont-9.0.06.npz").open("rb") as f:
            atlas = np.load(f)
            codes, packed = atlas["codepoints"].astype(np.int64), atlas["bitmaps"]
        bits = np.unpackbits(packed, axis=1).reshape(-1, GLYPH, GLYPH).astype(bool)  # (N, 16 rows, 16 cols)
        # Glyph 0 of our tables is a blank cell, used for code points Unifont lacks (e.g. surrogates).
        self.bitmaps = np.concatenate([np.zeros((1, GLYPH, GLYPH), bool), bits])
        ink_cols = self.bitmaps.any(axis=1)  # (N, 16)
        has_ink = ink_cols.any(axis=1)
        first = np.where(has_ink, ink_cols.argmax(axis=1), 0)
        last = np.where(has_ink, GLYPH - 1 - ink_cols[:, ::-1].argmax(axis=1), 0)
        start = np.maximum(first - 1, 0)
        # The reference slices the 16-column cell, so a glyph inked only at its right edge keeps fewer than 4.
        end = np.minimum(np.maximum(last + 1, start + 4), GLYPH)
        self.start = np.where(has_ink, start, 0).astype(np.int64)
        self.width = np.where(has_ink, end - start, 4).astype(np.int64)
        self.wide = self.bitmaps[:, :, CELL_W:].any(axis=(1, 2))  # needs two grid cells
        self.bmp = np.zeros(1 << 16, np.int64)
        in_bmp = codes < (1 << 16)
        self.bmp[codes[in_bmp]] = np.nonzero(in_bmp)[0] + 1
        self.astral = {int(c): int(i) + 1 for i, c in zip(np.nonzero(~in_bmp)[0], codes[~in_bmp], strict=True)}

    def indices(self, text: str, wrap_astral: bool) -> np.ndarray:
        """Glyph indices for each code point of ``text``."""
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        idx = self.bmp[cps & 0xFFFF]
        if not wrap_astral and (cps > 0xFFFF).any():
            for i in np.nonzero(cps > 0xFFFF)[0]:
                idx[i] = self.astral.get(int(cps[i]), 0)
        return idx


@functools.lru_cache(maxsize=1)
def _font() -> _Font:
    return _Font()


def render_lines(text: str, max_rows: int, *, wrap_astral: bool = True, ink: int = 0, background: int = 127,
                 width: int = 224) -> tuple[np.ndarray, int]:
    """Draw ``text`` as Unifont rows on a ``(max_rows * 16, width)`` uint8 canvas.

    Returns the canvas and the number of rows the text occupies (capped at ``max_rows``). Line breaking
    follows the reference: a glyph's row is ``floor(cumulative width including it / (width - widest glyph))``
    and glyphs on a row are packed from its left edge.
    """
    canvas = np.full((max_rows, GLYPH, width), background, np.uint8)
    font = _font()
    idx = font.indices(text, wrap_astral)
    if idx.size == 0:
        return canvas.reshape(max_rows * GLYPH, width), 0
    widths, starts = font.width[idx], font.start[idx]
    cum = np.cumsum(widths)
    line = width - int(widths.max())
    row = cum // line
    keep = row < max_rows
    idx, widths, starts, row, cum = idx[keep], widths[keep], starts[keep], row[keep], cum[keep]
    if idx.size == 0:
        return canvas.reshape(max_rows * GLYPH, width), 0
    left = cum - widths  # cumulative width before each glyph
    # x of a glyph = its left edge minus where its row began (the left edge of the row's first glyph).
    row_begin = np.zeros(int(row[-1]) + 1, np.int64)
    firsts = np.r_[0, np.nonzero(np.diff(row))[0] + 1]
    row_begin[row[firsts]] = left[firsts]
    x = left - row_begin[row]
    # One entry per drawn column: which glyph, which source column, where it goes.
    col_glyph = np.repeat(np.arange(idx.size), widths)
    offset = np.arange(col_glyph.size) - np.repeat(left - left[0], widths)
    src_col = starts[col_glyph] + offset
    dst_col = x[col_glyph] + offset
    columns = font.bitmaps[idx[col_glyph], :, src_col]  # (ncols, 16 rows)
    values = np.where(columns, np.uint8(ink), np.uint8(background))
    canvas[row[col_glyph][:, None], np.arange(GLYPH)[None, :], dst_col[:, None]] = values
    return canvas.reshape(max_rows * GLYPH, width), int(row[-1]) + 1


def grid_cells(text: str, columns: int, max_rows: int) -> np.ndarray:
    """Grid layout: the first cell (row-major index) of each code point of ``text``, -1 where it does not fit.

    A half-width glyph takes one cell, a wide one (ink right of column 8, e.g. CJK) two; a wide glyph that would
    straddle a line end starts the next line, leaving the last cell blank. Code points Unifont lacks take one
    blank cell, so every code point has a cell and training targets can be placed per character.
    """
    font = _font()
    span = 1 + font.wide[font.indices(text, wrap_astral=False)].astype(np.int64)
    cells = np.empty(span.size, np.int64)
    pos = 0
    for k, width in enumerate(span.tolist()):  # a loop: line-end skips depend on every earlier glyph
        if width == 2 and pos % columns == columns - 1:
            pos += 1
        cells[k] = pos
        pos += width
    cells[cells + span > columns * max_rows] = -1
    return cells


def render_grid(text: str, columns: int, max_rows: int, *, ink: int = 0, background: int = 127
                ) -> tuple[np.ndarray, int]:
    """Draw ``text`` on the character grid. Returns the ``(rows * 16, columns * 8)`` canvas and the rows used."""
    font = _font()
    idx = font.indices(text, wrap_astral=False)
    cells = grid_cells(text, columns, max_rows)
    keep = cells >= 0
    idx, cells = idx[keep], cells[keep]
    rows = int(cells.max()) // columns + 1 if cells.size else 0
    canvas = np.full((max(rows, 1), GLYPH, columns, CELL_W * 2), background, np.uint8)
    # Each glyph is drawn into a 16x16 box at its cell; the right half of a half-width glyph is blank, so the
    # boxes can be laid out at double stride and folded back onto the 8-px grid below.
    glyphs = np.where(font.bitmaps[idx], np.uint8(ink), np.uint8(background))  # (n, 16, 16)
    wide = font.wide[idx]
    canvas[cells // columns, :, cells % columns, :] = glyphs
    out = canvas[..., :CELL_W].reshape(max(rows, 1), GLYPH, columns * CELL_W)
    for cell, glyph in zip(cells[wide].tolist(), glyphs[wide], strict=True):  # rare: CJK and other wide glyphs
        r, c = divmod(cell, columns)
        out[r, :, c * CELL_W:(c + 2) * CELL_W] = glyph
    return out.reshape(-1, columns * CELL_W), rows


def _tile_image(image: ImageLike, tile: int) -> np.ndarray:
    im = open_image(image)
    if im.size != (tile, tile):
        im = im.resize((tile, tile))  # Pillow's default resampling, as the reference
    return np.asarray(im, dtype=np.uint8)


@dataclass(frozen=True)
class Drawn:
    """A snippet as canvases: ``canvases`` (what its one vector pools), whether they are a ``page``'s line strips,
    and, for a page whose points come from line windows, those ``windows`` (else empty: its points are its
    canvases)."""

    canvases: list[np.ndarray]
    page: bool
    windows: list[np.ndarray]


class Renderer:
    """Renders snippets to ``uint8`` RGB arrays of shape ``(H, W, 3)`` as set by a :class:`RenderConfig`."""

    def __init__(self, config: RenderConfig | None = None) -> None:
        self.config = config or RenderConfig()
        self._warned_images = False

    def prepare_text(self, text: str) -> str:
        """The exact text drawn: lower-cased, whitespace handled per layout, cut to ``max_chars``."""
        if self.config.lowercase:
            text = text.lower()
        if self.config.layout == "compact":
            # The paper draws \n and \t as Unifont's boxed hex glyphs; our own layout spends no ink on them.
            text = text.translate(_WHITESPACE_CONTROLS)
        elif self.config.layout == "grid":
            text = " ".join(text.split())  # a cell per space would be wasted: one space between words
        return text[: self.config.max_chars]

    def render_canvases(self, snippet: Snippet) -> tuple[list[np.ndarray], bool]:
        """The canvases one snippet is read from, and whether they are a page's line strips (:meth:`draw`)."""
        drawn = self.draw(snippet)
        return drawn.canvases, drawn.page

    def draw(self, snippet: Snippet, windows: bool = False) -> Drawn:
        """One snippet's canvases: one, except for a document image on the ``grid`` layout.

        A page, screenshot or scan (a ``page`` snippet, or an image-only snippet larger than a tile that looks
        like a document) cannot be read from one 224-px tile. The grid layout reads its text lines instead, as
        line strips laid along the grid (``strips.py``), ``page_rows`` rows a canvas; the model pools the
        canvases into one vector. With ``figure_labels``, any other image-only snippet (a plot, a screenshot) is
        read the same way from its labels (``strips.figure_strips``) when it has at least two. Anything else is
        one canvas. ``windows``: also draw a page's line windows when its points are read from them
        (``page_windows``), with its lines alone as ``lines_alone`` says.
        """
        cfg = self.config
        if cfg.layout == "grid" and len(snippet.images) == 1 and not snippet.text.strip():
            from vc2l_retriever.strips import document_strips, figure_strips  # strips imports this module

            image = open_image(snippet.images[0])
            strips = []
            if snippet.kind == "page" or max(image.size) > cfg.tile:
                strips = document_strips(image, require_document=snippet.kind != "page")
            if not strips and cfg.figure_labels and snippet.kind != "page":
                strips = figure_strips(image)
                strips = strips if len(strips) >= MIN_FIGURE_LABELS else []
            if strips:
                return self._draw_strips(strips, windows)
            snippet = replace(snippet, images=[image])  # decoded once: the tile path reuses it
        return Drawn([self.render(snippet)], False, [])

    def _draw_strips(self, strips: list[Strip], windows: bool) -> Drawn:
        from vc2l_retriever.strips import HEADING_HEIGHT, fold, line_windows, ribbon, single_line_windows

        cfg = self.config
        rows = cfg.page_rows or cfg.max_rows
        canvases = fold(ribbon(strips, cfg.background)[0], cfg.columns, rows, cfg.background)
        lines = []
        if windows and cfg.page_windows == "lines":
            lines = line_windows(strips, cfg.columns, rows, cfg.background)
            if cfg.lines_alone != "none":
                tall = HEADING_HEIGHT if cfg.lines_alone == "headings" else 0.0
                lines += single_line_windows(strips, cfg.columns, rows, tall, cfg.background)
        return Drawn(canvases, True, lines)

    def _cap_images(self, snippet: Snippet, free: int) -> list[ImageLike]:
        images = snippet.images
        if len(images) > free:
            if not self._warned_images:
                logger.warning(
                    "a snippet has %d images but the canvas has room for %d; keeping the first ones "
                    "(this warning is shown once)", len(images), free,
                )
                self._warned_images = True
            images = images[:free]
        return images

    def render(self, snippet: Snippet) -> np.ndarray:
        """Render one snippet. Raises ``InputError`` if one of its images cannot be decoded."""
        if self.config.layout == "official":
            has_text = bool(snippet.text.strip())
            images = self._cap_images(snippet, 3 if has_text else 4)
            tiles: list[ImageLike | None] = [None] * (4 - len(images)) + list(images)
            return self.render_mosaic(snippet.text, tiles)
        return self._render_compact(snippet)  # compact and grid

    def render_mosaic(self, text: str, tiles: list[ImageLike | None]) -> np.ndarray:
        """Official layout with explicit tile contents: ``tiles[k]`` is an image or ``None`` (text)."""
        if len(tiles) != 4:
            raise ValueError("the official mosaic has exactly 4 tiles")
        cfg = self.config
        rows, _ = render_lines(self.prepare_text(text), 4 * cfg.rows_per_tile, wrap_astral=True,
                               ink=cfg.ink, background=cfg.background, width=cfg.tile)
        # Compose in one grey channel and widen to RGB once: writing text into a strided RGB array is
        # several times slower than this.
        grey = np.full((2 * cfg.tile, 2 * cfg.tile), cfg.background, np.uint8)
        text_tile = 0
        for k, content in enumerate(tiles):
            if content is None:
                y, x = (k // 2) * cfg.tile, (k % 2) * cfg.tile
                grey[y:y + cfg.tile, x:x + cfg.tile] = rows[text_tile * cfg.tile:(text_tile + 1) * cfg.tile]
                text_tile += 1
        mosaic = np.stack([grey, grey, grey], axis=-1)
        for k, content in enumerate(tiles):
            if content is not None:
                y, x = (k // 2) * cfg.tile, (k % 2) * cfg.tile
                mosaic[y:y + cfg.tile, x:x + cfg.tile] = _tile_image(content, cfg.tile)
        return mosaic

    def _render_compact(self, snippet: Snippet) -> np.ndarray:
        cfg = self.config
        images = self._cap_images(snippet, cfg.max_images)
        text = self.prepare_text(snippet.text)
        if cfg.layout == "grid":
            rows, used = render_grid(text, cfg.columns, cfg.max_rows, ink=cfg.ink, background=cfg.background)
        else:
            rows, used = render_lines(text, cfg.max_rows, wrap_astral=False, ink=cfg.ink,
                                      background=cfg.background, width=cfg.tile)
        if not images:
            used = max(used, 1)  # an empty snippet still has one (blank) row
        parts = [_tile_image(im, cfg.tile) for im in images]
        band = rows[: used * GLYPH]
        parts.append(np.stack([band, band, band], axis=-1))
        canvas = np.concatenate(parts, axis=0)
        pad = -canvas.shape[0] % cfg.patch
        if pad:
            canvas = np.concatenate([canvas, np.full((pad, cfg.tile, 3), cfg.background, np.uint8)])
        return canvas


def render(item: Snippet | str, config: RenderConfig | None = None) -> Image.Image:
    """Convenience: render one snippet (or a string) to a PIL image, e.g. to look at what a model sees."""
    snippet = item if isinstance(item, Snippet) else Snippet(text=item)
    return Image.fromarray(Renderer(config).render(snippet))
