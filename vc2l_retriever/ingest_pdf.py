"""PDF -> snippets with ``pypdfium2``: the text layer, embedded images, and rendered tiles for scanned pages.

Per page (one at a time, every pdfium object closed before the next page):

1. The text layer in pdfium's reading order is cut into lines; each line's position comes from the loose
   boxes of its first and last characters. Lines form paragraphs where the vertical gap exceeds half a line,
   the text jumps up (a new column) or the font size changes; short lines set clearly larger than the page's
   body text become headings. Paragraphs are packed into snippets by :class:`ingest.Packer`.
2. Embedded images (``FPDF_PAGEOBJ_IMAGE`` objects, including those inside form XObjects) are decoded,
   downscaled to ``max_image_side`` and attached to the snippet nearest to them vertically.
3. A page whose text layer has fewer than ``min_page_text_chars`` letters or digits (a scan, or a page of
   vector drawings) is rendered ``page_width_px`` wide and cut into square ``page_tile_px`` tiles, one
   ``page`` snippet per non-blank tile, or kept whole as one ``page`` snippet (``page_tiles=False``, the
   choice for grid-layout models, which read a page's text lines). No OCR: the model reads the pixels.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from PIL import Image

from vc2l_retriever.ingest import (
    Block,
    Chunk,
    IngestError,
    IngestOptions,
    Packer,
    TimeBudget,
    shrink,
    spill_images,
)
from vc2l_retriever.inputs import MAX_IMAGE_PIXELS, InputError, Snippet, open_image

try:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("PDF ingestion needs pypdfium2: pip install 'vc2l-retriever[pdf]'") from e

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # (left, bottom, right, top) in PDF points, y up

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# pdfium marks a hyphen it found at a line end with U+0002; U+00AD is a soft hyphen. Other C0 controls are noise.
_SOFT_HYPHEN = ("\x02", "\u00ad")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff]")

_OPEN_ERRORS = {
    pdfium_c.FPDF_ERR_FORMAT: "not a valid PDF (corrupt or truncated)",
    pdfium_c.FPDF_ERR_SECURITY: "encrypted with an unsupported security handler",
    pdfium_c.FPDF_ERR_FILE: "cannot open the file",
}


@dataclass
class _Line:
    text: str
    box: Box | None
    soft_hyphen: bool = False

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1] if self.box else 0.0


def ingest_pdf(path: Path, source: str, options: IngestOptions) -> Iterator[Snippet]:
    """Stream the snippets of one PDF, page by page. Raises :class:`IngestError` for unreadable files.

    Work is bounded: at most ``max_pages`` pages, a stop after ``max_failed_pages`` consecutive pages fail to
    load (a page tree can claim a million pages that are not there), and a stop once ``max_file_seconds`` of
    work are spent. A stopped file raises after yielding the pages it read; failed pages are logged in one line.
    """
    doc = _open(path, source, options)
    budget = TimeBudget(options.max_file_seconds)
    try:
        count = len(doc)
        if count == 0:
            raise IngestError(source, "PDF has no pages")
        limit = count if options.max_pages is None else min(count, options.max_pages)
        title = _title(doc)
        packer = Packer(options.max_chars, options.max_images_per_snippet, options.paragraph_separator)
        pages = _PageLog(source, count)
        for index in range(limit):
            if pages.run >= options.max_failed_pages:
                pages.stop(index, f"stopped after {pages.run} consecutive pages failed to load (max_failed_pages)")
            if budget.exceeded():
                pages.stop(index, budget.reason())
            try:
                chunks = _page_chunks(doc, index, packer, options)
            except (pdfium.PdfiumError, InputError, OSError, ValueError) as e:
                pages.failed(index, e)
                packer.take()  # drop a half-read page's text so it cannot leak into the next page
                continue
            pages.read += 1
            pages.run = 0
            budget.pause()  # the caller's time with these snippets is not this file's work
            for chunk in chunks:
                chunk.metadata.update({"page_count": count, **({"title": title} if title else {})})
                kind = "page" if chunk.metadata.get("element") in ("page_tile", "page_image") else ""
                yield chunk.to_snippet(source, page=index + 1, kind=kind)
            budget.resume()
        pages.finish(limit)
    finally:
        doc.close()


def page_ranges(pages: list[int], most: int = 4) -> str:
    """``"pages 2–21, 40 and 3 more ranges"``: ascending 1-based page numbers as at most ``most`` ranges."""
    spans: list[list[int]] = []
    for page in pages:
        if spans and page == spans[-1][1] + 1:
            spans[-1][1] = page
        else:
            spans.append([page, page])
    text = ", ".join(f"{a:,}" if a == b else f"{a:,}–{b:,}" for a, b in spans[:most])
    more = f" and {len(spans) - most:,} more ranges" if len(spans) > most else ""
    return f"{'page' if len(pages) == 1 else 'pages'} {text}{more}"


@dataclass
class _PageLog:
    """What happened to one PDF's pages, reported once per file instead of once per page."""

    source: str
    count: int  # pages the page tree claims (it may lie)
    read: int = 0
    run: int = 0  # pages that failed in a row
    failures: list[int] = field(default_factory=list)
    first_error: str = ""

    def failed(self, index: int, error: Exception) -> None:
        logger.debug("%s: page %d failed (%s)", self.source, index + 1, error)
        self.failures.append(index + 1)
        self.first_error = self.first_error or str(error).rstrip(".") or type(error).__name__
        self.run += 1

    def _failed_text(self) -> str:
        return f"{page_ranges(self.failures)} failed to load: {self.first_error}" if self.failures else ""

    def stop(self, index: int, why: str) -> NoReturn:
        """Raise for a file stopped before page ``index + 1``, saying what was read and why it stopped."""
        first = index + 1
        rest = f"page {first:,}" if first == self.count else f"pages {first:,}–{self.count:,}"
        parts = [self._failed_text(), f"{rest} not read"]
        if self.read == 0:
            raise IngestError(self.source, f"no page could be read ({'; '.join(p for p in [why, *parts] if p)})")
        parts.insert(0, f"read {self.read:,} of {self.count:,} pages")
        raise IngestError(self.source, f"{why}: {'; '.join(p for p in parts if p)}")

    def finish(self, limit: int) -> None:
        """Raise if no page was read; otherwise log the failed pages and the page cap, one line each."""
        if self.failures and self.read == 0:
            raise IngestError(self.source, f"no page could be read ({self._failed_text()})")
        if self.failures:
            logger.warning("%s: %s; %s of %s pages read", self.source, self._failed_text(), f"{self.read:,}",
                           f"{self.count:,}")
        if limit < self.count:
            logger.warning("%s: read the first %s of %s pages (max_pages)", self.source, f"{limit:,}",
                           f"{self.count:,}")


def _open(path: Path, source: str, options: IngestOptions) -> pdfium.PdfDocument:
    try:
        if path.stat().st_size == 0:
            raise IngestError(source, "empty file (0 bytes)")
        return pdfium.PdfDocument(str(path), password=options.password)
    except pdfium.PdfiumError as e:
        if _loads_without_pages(path, options.password):
            raise IngestError(source, "PDF has no pages") from e
        if e.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            reason = "encrypted PDF: wrong password" if options.password else \
                "encrypted PDF: a password is required (IngestOptions.password)"
        else:
            reason = _OPEN_ERRORS.get(e.err_code, f"cannot open PDF ({e})")
        raise IngestError(source, reason) from e
    except OSError as e:
        raise IngestError(source, f"cannot read file ({e.strerror or e})") from e


def _loads_without_pages(path: Path, password: str | None) -> bool:
    """Whether pdfium opens the file but finds no pages.

    pypdfium2 refuses such a document with pdfium's *last* error code, which is stale: left by an earlier failed
    file (a password error would be reported for a page-less PDF). Only this direct check tells them apart.
    """
    secret = None if password is None else (password + "\x00").encode("utf-8")
    raw = pdfium_c.FPDF_LoadDocument((str(path) + "\x00").encode("utf-8", errors="surrogateescape"), secret)
    if not raw:
        return False
    pdfium_c.FPDF_CloseDocument(raw)
    return True


def _title(doc: pdfium.PdfDocument) -> str:
    try:
        return " ".join(doc.get_metadata_value("Title").split())
    except (pdfium.PdfiumError, AttributeError, UnicodeDecodeError):
        return ""


def _page_chunks(doc: pdfium.PdfDocument, index: int, packer: Packer, options: IngestOptions) -> list[Chunk]:
    page = doc[index]
    try:
        textpage = page.get_textpage()
        try:
            lines = _lines(textpage)
        finally:
            textpage.close()
        letters = sum(ch.isalnum() for line in lines for ch in line.text)
        if letters < options.min_page_text_chars:
            short_text = " ".join(line.text for line in lines if line.text)
            return _page_tiles(page, options, short_text)
        for block in _blocks(lines):
            packer.add(block)
        chunks = packer.take()  # snippets never span pages; headings carry over to the next page
        images, skipped = _page_images(page, options)
        _attach(chunks, images)
        for chunk in chunks:
            if chunk.box:
                chunk.metadata["bbox"] = _rounded(chunk.box)  # where the snippet's text is, for highlighting
        if skipped and chunks:
            chunks[0].metadata["images_skipped"] = skipped
        return spill_images(chunks, options.max_images_per_snippet)
    finally:
        page.close()


# --------------------------------------------------------------------------------------------------- text


def _lines(textpage: pdfium.PdfTextPage) -> list[_Line]:
    """The page's text lines in pdfium order, each with its box; empty lines mark paragraph breaks."""
    text = textpage.get_text_range()
    # String offsets equal pdfium char indices when the counts agree (they do unless pdfium split a character
    # into UTF-16 surrogates); otherwise lines carry no geometry rather than wrong geometry.
    exact = len(text) == textpage.count_chars()
    lines: list[_Line] = []
    start = 0
    for match in _LINE_BREAK.finditer(text + "\n"):
        raw, offset, start = text[start:match.start()], start, match.end()
        stripped = raw.rstrip()
        soft = stripped.endswith(_SOFT_HYPHEN)
        clean = " ".join(_CONTROL.sub("", stripped.rstrip("".join(_SOFT_HYPHEN)).replace("\u00ad", "")).split())
        if not clean:
            lines.append(_Line("", None))
            continue
        box = None
        if exact:
            first = offset + len(raw) - len(raw.lstrip())
            last = offset + len(stripped) - 1
            box = _union(textpage.get_charbox(first, loose=True), textpage.get_charbox(last, loose=True))
        lines.append(_Line(clean, box, soft))
    return lines


def _union(a: Box | None, b: Box | None) -> Box | None:
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _breaks(prev: _Line, line: _Line) -> bool:
    """Whether ``line`` starts a new paragraph after ``prev``."""
    if prev.box is None or line.box is None:
        return False
    h = max(prev.height, line.height)
    gap = prev.box[1] - line.box[3]  # previous bottom minus this top (y grows upwards)
    jumped_up = line.box[3] > prev.box[3] + 0.5 * h  # next column or a new text frame
    return gap > 0.5 * h or jumped_up or abs(prev.height - line.height) > 0.2 * h


def _blocks(lines: list[_Line]) -> list[Block]:
    """Group lines into paragraphs and headings."""
    heights = [line.height for line in lines if line.box]
    body = statistics.median(heights) if heights else 0.0
    blocks: list[Block] = []
    group: list[_Line] = []
    for line in lines + [_Line("", None)]:
        if group and (not line.text or _breaks(group[-1], line)):
            blocks.append(_paragraph(group, body))
            group = []
        if line.text:
            group.append(line)
    return blocks


def _paragraph(group: list[_Line], body: float) -> Block:
    text = group[0].text
    for prev, line in zip(group, group[1:], strict=False):
        text += ("" if prev.soft_hyphen else " ") + line.text  # a soft hyphen joins the word back together
    box: Box | None = None
    for line in group:
        box = _union(box, line.box)
    heading = body > 0 and len(group) <= 3 and len(text) <= 200 and \
        all(line.height >= 1.3 * body for line in group)
    return Block(text, heading=heading, metadata={"element": "heading" if heading else "p"}, box=box)


def _rounded(box: Box | None) -> list[float] | None:
    return [round(v, 1) for v in box] if box else None


# --------------------------------------------------------------------------------------------------- images


def _page_images(page: pdfium.PdfPage, options: IngestOptions) -> tuple[list[tuple[Box, Image.Image]], int]:
    """Decoded embedded images with their boxes, and how many were skipped (tiny, huge, undecodable, over cap)."""
    images: list[tuple[Box, Image.Image]] = []
    skipped = 0
    for obj in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=4):
        try:
            w, h = obj.get_px_size()
            if min(w, h) < options.min_image_px or w * h > MAX_IMAGE_PIXELS \
                    or len(images) >= options.max_images_per_page:
                skipped += 1
                continue
            image = _decode(obj, options.max_image_side)
            images.append((tuple(obj.get_bounds()), image))
        except (pdfium.PdfiumError, InputError, OSError, ValueError) as e:
            logger.debug("embedded image skipped (%s)", e)
            skipped += 1
    return images, skipped


def _decode(obj: pdfium.PdfImage, side: int) -> Image.Image:
    rendered = False
    try:
        bitmap = obj.get_bitmap(render=False)
    except pdfium.PdfiumError:
        bitmap = obj.get_bitmap(render=True)  # some filters only decode through rendering
        rendered = True
    try:
        image = open_image(bitmap.to_pil())  # copies into an RGB image that no longer needs the bitmap
    finally:
        bitmap.warn_on_close = False  # safe: nothing refers to the buffer any more
        bitmap.close()
    low, high = image.convert("L").getextrema()
    if rendered and low == high:  # pdfium renders an undecodable image as a blank box: skip it, do not embed it
        raise ValueError("embedded image cannot be decoded (renders blank)")
    return shrink(image, side)


def _distance(a: Box | None, b: Box) -> float:
    if a is None:
        return math.inf
    return max(0.0, b[1] - a[3], a[1] - b[3])  # vertical gap; 0 when they overlap


def _attach(chunks: list[Chunk], images: list[tuple[Box, Image.Image]]) -> None:
    """Give each image to the snippet nearest to it vertically (the earlier one on a tie)."""
    if images and not chunks:  # possible only with min_page_text_chars=0 on a page without text
        chunks.append(Chunk())
    for box, image in images:
        nearest = min(range(len(chunks)), key=lambda k: (_distance(chunks[k].box, box), k))
        chunks[nearest].images.append(image)
        chunks[nearest].metadata.setdefault("image_boxes", []).append(_rounded(box))


# --------------------------------------------------------------------------------------------------- scans


def _render_page(page: pdfium.PdfPage, options: IngestOptions) -> tuple[Image.Image, float]:
    """The page as RGB, ``page_width_px`` wide (rounded to whole tiles when tiling), and its scale."""
    width, height = page.get_size()
    if page.get_rotation() in (90, 270):
        width, height = height, width
    tile = options.page_tile_px
    wide = max(1, round(options.page_width_px / tile)) * tile if options.page_tiles else options.page_width_px
    scale = wide / width
    scale = min(scale, math.sqrt(MAX_IMAGE_PIXELS / (width * height)))  # absurdly long pages: cap the pixels
    bitmap = page.render(scale=scale)
    try:
        return bitmap.to_pil().convert("RGB"), scale
    finally:
        bitmap.close()


def _blank(image: Image.Image) -> bool:
    """Nothing drawn here (under 16 grey levels of contrast): an empty page or tile would only add noise."""
    low, high = image.convert("L").getextrema()
    return high - low < 16


def _page_tiles(page: pdfium.PdfPage, options: IngestOptions, short_text: str) -> list[Chunk]:
    """Render the page and cut it into square tiles, one ``page`` snippet per non-blank tile (or, without
    ``page_tiles``, the whole page as one ``page`` snippet)."""
    tile = options.page_tile_px
    image, scale = _render_page(page, options)
    if not options.page_tiles:
        if _blank(image):
            return []
        meta: dict[str, Any] = {"element": "page_image", "render_scale": round(scale, 4),
                                "reason": "no usable text layer"}
        if short_text:
            meta["page_text"] = short_text
        return [Chunk(images=[image], metadata=meta)]
    chunks: list[Chunk] = []
    blank = 0
    for band in range(math.ceil(image.height / tile)):
        for column in range(math.ceil(image.width / tile)):
            box = (column * tile, band * tile, min(image.width, (column + 1) * tile),
                   min(image.height, (band + 1) * tile))
            crop = image.crop(box)
            if _blank(crop):
                blank += 1
                continue
            if crop.size != (tile, tile):  # pad edge tiles so the renderer does not stretch them
                padded = Image.new("RGB", (tile, tile), (255, 255, 255))
                padded.paste(crop, (0, 0))
                crop = padded
            meta: dict[str, Any] = {"element": "page_tile", "band": band, "column": column,
                                    "tile_box": list(box), "render_scale": round(scale, 4),
                                    "reason": "no usable text layer"}
            chunks.append(Chunk(images=[crop], metadata=meta))
    if chunks:
        chunks[0].metadata["blank_tiles_skipped"] = blank
        if short_text:
            chunks[0].metadata["page_text"] = short_text
    return chunks
