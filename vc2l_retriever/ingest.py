"""Files -> ordered :class:`Snippet` lists with provenance. No OCR anywhere: what a file shows as pixels stays pixels.

- PDF (``ingest_pdf``, needs ``pypdfium2``): the text layer in reading order, packed into snippets, with the
  page's embedded images attached to the nearest snippet; pages without a usable text layer (scans) become
  rendered page tiles (kind ``page``).
- HTML (``ingest_html``, needs ``selectolax``): main content only, headings kept with their text, images
  resolved safely (local files inside the document's folder, bounded ``data:`` URIs, remote only on request).
- Plain text, Markdown and reStructuredText: paragraphs, with headings starting a new snippet.
- Image files: one image snippet each, validated by decoding.

Snippets are filled up to ``IngestOptions.max_chars`` characters, splitting at paragraph, then sentence, then
word boundaries. With the budget from :func:`canvas_budget` (derived from a model's :class:`RenderConfig`),
the renderer draws every snippet's text whole instead of cutting it off.

Containment: a path given by the caller is read as given; what is found inside a folder (files, folders, images
referenced by HTML/Markdown) is read only if its real path stays inside that folder, unless
``IngestOptions.follow_symlinks`` (:func:`refusal`, :func:`walk_paths`). Work per file is bounded by
``max_pages``, ``max_failed_pages`` and ``max_file_seconds``; repeated warnings are logged once per file.
"""

from __future__ import annotations

import base64
import binascii
import errno
import functools
import io
import logging
import os
import re
import time
import urllib.parse
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from vc2l_retriever.inputs import MAX_IMAGE_PIXELS, ImageLike, InputError, Snippet, open_image
from vc2l_retriever.render import RenderConfig, render_lines

logger = logging.getLogger(__name__)

PDF_SUFFIXES = frozenset({".pdf"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".rst"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
SUPPORTED_SUFFIXES = PDF_SUFFIXES | HTML_SUFFIXES | TEXT_SUFFIXES | IMAGE_SUFFIXES


class IngestError(Exception):
    """A file that cannot be ingested. ``str(e)`` is ``"{source}: {reason}"``."""

    def __init__(self, source: str | Path, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = str(source)
        self.reason = reason

    def __reduce__(self) -> tuple[type[IngestError], tuple[str, str]]:
        # Exceptions pickle through ``args``; ours has two, so multiprocessing workers can send it back.
        return (IngestError, (self.source, self.reason))


@dataclass
class IngestOptions:
    """How files are cut into snippets.

    Attributes:
        max_chars: Text budget per snippet; :func:`canvas_budget` derives it from a model's render config.
        fetch_remote: Download ``http(s)`` images referenced by HTML/Markdown (never done unless True).
        password: Password for encrypted PDFs.
        max_pages: Read at most this many pages of each PDF (``None``: all); a page tree can claim millions.
        max_failed_pages: Stop reading a PDF after this many consecutive pages fail to load (a lying page
            count, or a run of broken pages); the file is reported with how many pages were read.
        max_file_seconds: Stop working on one file after this many seconds of work, checked between pages and
            images (``None``: no limit); the file is reported. Time a caller spends between snippets of a
            streamed file does not count.
        page_width_px: Pages without a text layer are rendered so that their width is about this many pixels
            (rounded to whole tiles), which keeps 10-12 pt text legible on a 224-px tile.
        page_tile_px: Side of the square tiles a rendered page is cut into; one tile is one snippet.
        page_tiles: Cut rendered pages into tiles (``False``: each page is one ``page`` snippet of the whole
            page, which a ``grid``-layout model reads line by line, exactly as ``encode`` reads that page's image;
            :func:`~vc2l_retriever.index.default_ingest_options` chooses this for such models).
        min_page_text_chars: A PDF page with fewer letters and digits in its text layer is treated as scanned.
        max_images_per_snippet: Images beyond this follow their snippet as separate image snippets (the
            official canvas shows 3 images next to text).
        min_image_px: Embedded PDF images smaller than this on either side (rules, bullets) are skipped.
        max_images_per_page: At most this many embedded images are extracted from one PDF page.
        max_image_side: In-memory images (from PDFs, ``data:`` URIs, downloads) are downscaled to this long side.
        max_file_bytes: Text and HTML files larger than this are refused (they are read into memory).
        max_data_uri_bytes: Larger ``data:`` URIs are dropped.
        max_remote_bytes: Larger downloads are dropped (``fetch_remote`` only).
        remote_timeout: Seconds per download (``fetch_remote`` only).
        image_root: Local images referenced by HTML/Markdown must lie inside this folder (default: the
            document's own folder); :func:`ingest` uses the folder it was given.
        root: The folder argument a file was found in (:func:`ingest` and the index set it): the file must
            resolve inside it. ``None`` (a file named directly): read as given.
        follow_symlinks: Also read files, folders and images whose symlinks resolve outside ``root`` (or
            ``image_root``). Off by default: a link such as ``passwd.txt -> /etc/passwd`` is refused.
        paragraph_separator: Joins paragraphs inside one snippet.
    """

    max_chars: int = 700
    fetch_remote: bool = False
    password: str | None = None
    max_pages: int | None = 2000
    max_failed_pages: int = 20
    max_file_seconds: float | None = 120.0
    page_width_px: int = 672
    page_tile_px: int = 224
    page_tiles: bool = True
    min_page_text_chars: int = 16
    max_images_per_snippet: int = 3
    min_image_px: int = 32
    max_images_per_page: int = 32
    max_image_side: int = 448
    max_file_bytes: int = 100 * 1024 * 1024
    max_data_uri_bytes: int = 8 * 1024 * 1024
    max_remote_bytes: int = 8 * 1024 * 1024
    remote_timeout: float = 10.0
    image_root: str | Path | None = None
    root: str | Path | None = None
    follow_symlinks: bool = False
    paragraph_separator: str = "\n"

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {self.max_chars}")
        if self.max_pages is not None and self.max_pages < 1:
            raise ValueError(f"max_pages must be >= 1 or None, got {self.max_pages}")
        if not 16 <= self.page_tile_px <= self.page_width_px:
            raise ValueError("page_tile_px must be at least 16 and at most page_width_px")
        if self.max_images_per_snippet < 1:
            raise ValueError("max_images_per_snippet must be >= 1")
        if self.max_failed_pages < 1:
            raise ValueError(f"max_failed_pages must be >= 1, got {self.max_failed_pages}")
        if self.max_file_seconds is not None and not self.max_file_seconds > 0:
            raise ValueError(f"max_file_seconds must be > 0 or None, got {self.max_file_seconds}")


# --------------------------------------------------------------------------------------------------- budget

_SAMPLE = (
    "Retrieval systems embed documents as vectors. Each snippet of a page, such as a paragraph with its "
    "heading, a caption and the figure it describes, or a table, is drawn as pixels and encoded by one "
    "vision transformer; queries are drawn the same way. In 2024, 37% of the pages we indexed had images. "
)


@functools.lru_cache(maxsize=32)
def canvas_budget(render_config: RenderConfig, reserve_image: bool = False) -> int:
    """Characters of typical English prose that fit the text area of one canvas.

    Measured with :func:`render.render_lines` (glyph widths vary, so this is an estimate: text with many wide
    glyphs, such as CJK, fits fewer characters). Capped at ``render_config.max_chars``.

    Args:
        render_config: The model's render settings.
        reserve_image: Leave room for an image: on the official 448-px mosaic the text then has 3 of the 4
            tiles. The compact layout stacks image tiles above ``max_rows`` text rows, so nothing changes.
    """
    if render_config.layout == "grid":  # one cell a character (whitespace runs collapse): exact, not measured
        return min(render_config.max_rows * render_config.columns, render_config.max_chars)
    if render_config.layout == "official":
        rows = (3 if reserve_image else 4) * render_config.rows_per_tile
    else:
        rows = render_config.max_rows
    sample = _SAMPLE * (rows * render_config.tile // (4 * len(_SAMPLE)) + 2)
    if render_config.lowercase:
        sample = sample.lower()
    lo, hi = 0, len(sample)  # invariant: sample[:lo] fits, sample[:hi + 1] does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        _, used = render_lines(sample[:mid], rows + 1, width=render_config.tile)
        lo, hi = (mid, hi) if used <= rows else (lo, mid - 1)
    return min(lo, render_config.max_chars)


# --------------------------------------------------------------------------------------------------- packing


@dataclass
class Block:
    """One unit of a document before packing: a paragraph, a heading or an image with its text.

    Attributes:
        text: Whitespace-normalised text (may be empty for a bare image).
        heading: Starts a new snippet, and its text prefixes that snippet.
        level: Heading level (1 = outermost), used for the ``section`` path.
        images: Images that go into the snippet where this block starts.
        metadata: Provenance merged into the snippet: lists extend, ints add, anything else first wins.
        box: ``(left, bottom, right, top)`` in PDF points, for attaching images by position.
    """

    text: str = ""
    heading: bool = False
    level: int = 1
    images: list[ImageLike] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    box: tuple[float, float, float, float] | None = None


@dataclass
class Chunk:
    """A snippet being filled by :class:`Packer`."""

    text: str = ""
    images: list[ImageLike] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    box: tuple[float, float, float, float] | None = None
    heading_only: bool = False

    def add_box(self, box: tuple[float, float, float, float] | None) -> None:
        """Grow the chunk's bounding box to include ``box``."""
        if box is not None:
            b = self.box or box
            self.box = (min(b[0], box[0]), min(b[1], box[1]), max(b[2], box[2]), max(b[3], box[3]))

    def to_snippet(self, source: str, page: int | None = None, kind: str = "") -> Snippet:
        """The finished snippet (``order`` is assigned by :func:`ingest_file`)."""
        return Snippet(text=self.text, images=self.images, source=source, page=page, kind=kind,
                       metadata=self.metadata)


def merge_metadata(into: dict[str, Any], new: dict[str, Any], first_only: bool = True) -> None:
    """Merge provenance: lists extend, ints add, other values keep the first one seen.

    With ``first_only=False`` (a block continuing into another snippet) only the first-wins values are copied.
    """
    for key, value in new.items():
        if isinstance(value, list):
            if first_only:
                into.setdefault(key, []).extend(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            if first_only:
                into[key] = into.get(key, 0) + value
        else:
            into.setdefault(key, value)


_SENTENCE = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])")


def split_units(text: str, max_chars: int) -> list[tuple[str, str]]:
    """Cut an over-long paragraph into ``(unit, glue)`` pairs of at most ``max_chars`` characters each.

    Sentences first, then words, then (for a single word longer than the budget) hard cuts. ``glue`` is what
    joins the unit to the previous one when both land in the same snippet.
    """
    units: list[tuple[str, str]] = []
    for match in re.finditer(r"\S.*?(?:" + _SENTENCE.pattern + r"|$)", text, flags=re.S):
        sentence = match.group().strip()
        glue = "" if match.start() > 0 and not text[match.start() - 1].isspace() else " "
        if len(sentence) <= max_chars:
            units.append((sentence, glue))
            continue
        for i, word in enumerate(sentence.split()):
            word_glue = glue if i == 0 else " "
            for j in range(0, len(word), max_chars):
                units.append((word[j:j + max_chars], word_glue if j == 0 else ""))
    return units


class Packer:
    """Greedily fills snippets with blocks, never exceeding ``max_chars`` of text.

    A paragraph that fits the current snippet joins it; one that does not starts the next snippet; one longer
    than a whole snippet is split by :func:`split_units` and fills the current snippet first. Headings start a
    new snippet; every snippet records the innermost heading (``heading``) and the heading path (``section``).
    """

    def __init__(self, max_chars: int, max_images: int = 3, separator: str = "\n") -> None:
        self.max_chars = max_chars
        self.max_images = max_images
        self.separator = separator
        self.chunks: list[Chunk] = []
        self.section: list[tuple[int, str]] = []
        self.current = self._new_chunk()

    def _new_chunk(self) -> Chunk:
        chunk = Chunk()
        if self.section:
            chunk.metadata["heading"] = self.section[-1][1]
            chunk.metadata["section"] = [text for _, text in self.section]
        return chunk

    def close(self) -> None:
        """Finish the current snippet (if it has anything) and start a new one."""
        if self.current.text or self.current.images:
            self.chunks.append(self.current)
        self.current = self._new_chunk()

    def finish(self) -> list[Chunk]:
        """Close the last snippet and return all of them in order."""
        self.close()
        return self.chunks

    def take(self) -> list[Chunk]:
        """Close the current snippet and hand over the finished ones; the heading path carries on."""
        self.close()
        chunks, self.chunks = self.chunks, []
        return chunks

    def add(self, block: Block) -> None:
        """Add one block in reading order."""
        if block.heading and block.text:
            self.close()
            while self.section and self.section[-1][0] >= block.level:
                self.section.pop()
            self.section.append((block.level, block.text[: self.max_chars]))
            self.current = self._new_chunk()
            self._add_text(block)
            self.current.heading_only = True
            return
        if block.images:
            full = len(self.current.images) + len(block.images) > self.max_images and self.current.images
            no_room = not self._fits(block.text, self.separator) and len(block.text) <= self.max_chars
            if full or (no_room and not self.current.heading_only):
                self.close()
            self.current.images.extend(block.images)
        self._add_text(block)

    def _fits(self, text: str, glue: str) -> bool:
        extra = len(text) + (len(glue) if self.current.text else 0)
        return len(self.current.text) + extra <= self.max_chars

    def _append(self, text: str, glue: str, block: Block, first: bool) -> None:
        self.current.text = f"{self.current.text}{glue}{text}" if self.current.text else text
        self.current.heading_only = False
        self.current.add_box(block.box)
        merge_metadata(self.current.metadata, block.metadata, first_only=first)

    def _add_text(self, block: Block) -> None:
        text = block.text.strip()
        if not text:
            merge_metadata(self.current.metadata, block.metadata)
            self.current.add_box(block.box)
            return
        if self._fits(text, self.separator):
            self._append(text, self.separator, block, True)
            return
        if len(text) <= self.max_chars and not self.current.heading_only:
            self.close()
            self._append(text, self.separator, block, True)
            return
        first = True
        for i, (unit, glue) in enumerate(split_units(text, self.max_chars)):
            glue = self.separator if i == 0 else glue
            if not self._fits(unit, glue):
                self.close()
            self._append(unit, glue, block, first)
            first = False


def pack(blocks: Iterable[Block], options: IngestOptions) -> list[Chunk]:
    """Pack blocks into snippets under ``options.max_chars`` (see :class:`Packer`)."""
    packer = Packer(options.max_chars, options.max_images_per_snippet, options.paragraph_separator)
    for block in blocks:
        packer.add(block)
    return spill_images(packer.finish(), options.max_images_per_snippet)


def spill_images(chunks: list[Chunk], max_images: int) -> list[Chunk]:
    """Move images beyond ``max_images`` into image-only snippets right after their snippet (none are lost)."""
    out: list[Chunk] = []
    for chunk in chunks:
        extra, chunk.images = chunk.images[max_images:], chunk.images[:max_images]
        out.append(chunk)
        for i in range(0, len(extra), max_images):
            meta = {k: list(v) if isinstance(v, list) else v for k, v in chunk.metadata.items()
                    if k in ("heading", "section", "title")}
            out.append(Chunk(images=extra[i:i + max_images], metadata={**meta, "overflow_images": True},
                             box=chunk.box))
    return out


def shrink(image: Image.Image, side: int) -> Image.Image:
    """Downscale in place so the long side is at most ``side`` pixels (keeps in-memory images small)."""
    if max(image.size) > side:
        image.thumbnail((side, side))
    return image


# --------------------------------------------------------------------------------------------------- bounds

FOLLOW_HINT = "follow_symlinks=True or --follow-symlinks allows it"
LOOP_REASON = "symlink loop (too many levels of symbolic links)"


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (plain path comparison: resolve both first)."""
    path, folder = os.fspath(path), os.fspath(folder)
    return path == folder or path.startswith(os.path.join(folder, ""))


def _outside(real: str, folder: str) -> str:
    return f"symlink resolves outside the folder being indexed ({real} is not in {folder}; {FOLLOW_HINT})"


def symlink_loop(path: str | Path) -> bool:
    """Whether resolving ``path`` fails because its symlinks form a loop (``a -> b -> a``)."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def refusal(path: str | Path, options: IngestOptions) -> str | None:
    """Why :func:`iter_file` will not read ``path`` under the containment rule, or ``None``.

    A file found inside a folder argument (``options.root``) must resolve inside that folder, unless
    ``options.follow_symlinks``; a symlink loop is refused everywhere. A caller that opens a file before
    ingesting it (to hash it) should ask this first, so that nothing outside the folder is opened at all.
    """
    if symlink_loop(path):
        return LOOP_REASON
    if options.root is None or options.follow_symlinks:
        return None
    real, folder = os.path.realpath(path), os.path.realpath(options.root)
    return None if is_inside(real, folder) else _outside(real, folder)


class TimeBudget:
    """Seconds of work spent on one file, against ``IngestOptions.max_file_seconds``.

    Streaming handlers :meth:`pause` while a snippet is out with the caller: a slow consumer (one that embeds
    each snippet) must not make a file look slow.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.spent = 0.0
        self._since: float | None = time.monotonic()

    def pause(self) -> None:
        if self._since is not None:
            self.spent += time.monotonic() - self._since
            self._since = None

    def resume(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    def elapsed(self) -> float:
        return self.spent + (time.monotonic() - self._since if self._since is not None else 0.0)

    def exceeded(self) -> bool:
        return self.seconds is not None and self.elapsed() > self.seconds

    def reason(self) -> str:
        return f"stopped after the time budget of {self.seconds:g} s per file (max_file_seconds)"


# --------------------------------------------------------------------------------------------------- images


_DROPPED = {  # metadata key -> how a dropped image is described in the per-document log line
    "refused_images": "refused",
    "missing_images": "not found",
    "invalid_images": "not usable",
    "remote_images_skipped": "not fetched",
}


class ImageResolver:
    """Turns ``src`` references of a document into images, safely, counting what it drops.

    Local paths resolve against the document's folder and must stay inside ``root`` (symlinks included;
    ``follow_symlinks`` lets a link inside the folder point elsewhere, never a ``../`` path); ``data:`` URIs are
    decoded within a size bound; remote URLs are fetched only with ``fetch_remote``. Every dropped image is
    counted under a metadata key (``remote_images_skipped``, ``missing_images``, ``refused_images``,
    ``invalid_images``) of the block it belonged to, and :meth:`log_dropped` logs one line per key, so a page
    with 10,000 bad images cannot flood the log. Past ``max_file_seconds`` of work, :meth:`resolve` raises
    :class:`IngestError`.
    """

    def __init__(self, document: Path, options: IngestOptions, fetch: Callable[[str], bytes] | None = None) -> None:
        self.document = document
        self.base = document.parent
        root = Path(options.image_root) if options.image_root is not None else self.base
        self.root = Path(os.path.realpath(root))
        self.lexical_root = Path(os.path.abspath(root))
        self.options = options
        self._fetch = fetch or self._download
        self.budget = TimeBudget(options.max_file_seconds)
        self.resolved = 0
        self.dropped: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def resolve(self, src: str) -> tuple[ImageLike | None, str | None]:
        """Return ``(image, None)`` or ``(None, metadata key counting why it was dropped)``."""
        if self.budget.exceeded():
            raise IngestError(os.path.abspath(self.document),
                              f"{self.budget.reason()}; {self.resolved:,} images resolved")
        self.resolved += 1
        src = src.strip()
        if not src:
            return self._drop("invalid_images", "(empty src)", "no source")
        lowered = src.lower()
        if lowered.startswith("data:"):
            return self._data_uri(src)
        if lowered.startswith(("http://", "https://", "//")):
            if not self.options.fetch_remote:
                return self._drop("remote_images_skipped", src, "fetch_remote=False")
            return self._remote("https:" + src if src.startswith("//") else src)
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", src) and not re.match(r"^[a-zA-Z]:[\\/]", src):
            return self._drop("refused_images", src, "unsupported URL scheme")
        return self._local(src)

    def log_dropped(self) -> None:
        """Log the dropped images once per kind (a few examples each), then start counting afresh."""
        for key, n in self.dropped.items():
            examples = self.examples[key]
            more = f"; and {n - len(examples):,} more" if n > len(examples) else ""
            level = logging.INFO if key == "remote_images_skipped" else logging.WARNING
            logger.log(level, "%s: %s image%s %s: %s%s", self.document, f"{n:,}", "" if n == 1 else "s",
                       _DROPPED[key], "; ".join(examples), more)
        self.dropped.clear()
        self.examples.clear()

    def _drop(self, key: str, src: str, why: str) -> tuple[None, str]:
        logger.debug("%s: image %s dropped (%s)", self.document, src[:200], why)
        self.dropped[key] += 1
        examples = self.examples.setdefault(key, [])
        if len(examples) < 3:
            examples.append(f"{src[:120]} ({why})")
        return None, key

    def _allowed(self, target: Path, real: Path) -> bool:
        if is_inside(real, self.root):
            return True
        # follow_symlinks trusts links found in the folder, not paths: "../../etc/passwd" still leaves it.
        return self.options.follow_symlinks and is_inside(os.path.abspath(target), self.lexical_root)

    def _local(self, src: str) -> tuple[ImageLike | None, str | None]:
        rel = urllib.parse.unquote(src.split("#", 1)[0].split("?", 1)[0])
        # A site-absolute "/img/x.png" means the site root, which for saved pages is the image root.
        target = self.root / rel.lstrip("/\\") if rel.startswith(("/", "\\")) else self.base / rel
        real = Path(os.path.realpath(target))
        if not self._allowed(target, real):
            return self._drop("refused_images", src, f"it resolves outside {self.root}")
        if not real.is_file():
            return self._drop("missing_images", src, f"{real} not found; the text is kept")
        try:  # checks the header and the file's structure (truncation) without decoding pixels
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
                with Image.open(real) as im:
                    w, h = im.size
                    if w * h > MAX_IMAGE_PIXELS or w * h == 0:
                        raise OSError(f"{w}x{h} pixels")
                    im.verify()
        except Exception as e:  # Pillow's verify() raises many exception types for bad files
            return self._drop("invalid_images", src, f"not a usable image: {e}")
        return real, None

    def _data_uri(self, src: str) -> tuple[ImageLike | None, str | None]:
        header, _, payload = src.partition(",")
        if len(payload) > self.options.max_data_uri_bytes * 4 // 3 + 4:
            return self._drop("invalid_images", "data: URI", f"over {self.options.max_data_uri_bytes} bytes")
        try:
            data = (base64.b64decode(payload, validate=False) if header.lower().endswith(";base64")
                    else urllib.parse.unquote_to_bytes(payload))
        except (binascii.Error, ValueError) as e:
            return self._drop("invalid_images", "data: URI", f"undecodable: {e}")
        return self._decode(data, "data: URI")

    def _remote(self, url: str) -> tuple[ImageLike | None, str | None]:
        try:
            data = self._fetch(url)
        except (OSError, ValueError) as e:
            return self._drop("remote_images_skipped", url, f"not fetched: {e}")
        return self._decode(data, url[:200])

    def _download(self, url: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": "vc2l-retriever"})
        with urllib.request.urlopen(request, timeout=self.options.remote_timeout) as response:
            data = response.read(self.options.max_remote_bytes + 1)
        if len(data) > self.options.max_remote_bytes:
            raise ValueError(f"larger than {self.options.max_remote_bytes} bytes")
        return data

    def _decode(self, data: bytes, name: str) -> tuple[ImageLike | None, str | None]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = open_image(Image.open(io.BytesIO(data)))
        except (OSError, InputError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            return self._drop("invalid_images", name, f"not a usable image: {e}")
        return shrink(image, self.options.max_image_side), None


# --------------------------------------------------------------------------------------------------- text files

_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_RST_ADORN = re.compile(r"^([!-/:-@\[-`{-~])\1+\s*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s|^\s*\|")
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_RST_IMAGE = re.compile(r"^\.\.\s+(?:image|figure)::\s*(\S+)\s*$")


def read_bytes(path: Path, source: str, options: IngestOptions) -> bytes:
    """A file's bytes, refusing files over ``options.max_file_bytes`` before reading them."""
    try:
        size = path.stat().st_size
        if size > options.max_file_bytes:
            raise IngestError(source, f"file is larger than max_file_bytes ({size} > {options.max_file_bytes})")
        return path.read_bytes()
    except OSError as e:
        raise IngestError(source, f"cannot read file ({e.strerror or e})") from e


def read_text(path: Path, source: str, options: IngestOptions) -> tuple[str, bool]:
    """Read a text file as UTF-8 (BOMs honoured); undecodable bytes become U+FFFD. Returns (text, had_errors)."""
    data = read_bytes(path, source, options)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace"), False
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        logger.warning("%s: not valid UTF-8; undecodable bytes replaced with U+FFFD", source)
        return data.decode("utf-8", errors="replace"), True


def _join_lines(lines: list[str]) -> str:
    """Join a paragraph's lines: soft wraps become spaces, list items and table rows keep their line breaks."""
    out = ""
    for line in lines:
        piece = " ".join(line.split())
        if not out:
            out = piece
        elif _LIST_ITEM.match(line):
            out += "\n" + piece
        else:
            out += " " + piece
    return out


class _MarkupReader:
    """Line-based reader for plain text, Markdown and reStructuredText (paragraphs split at blank lines)."""

    def __init__(self, fmt: str, resolver: ImageResolver) -> None:
        self.fmt = fmt
        self.resolver = resolver
        self.blocks: list[Block] = []
        self.paragraph: list[str] = []
        self.rst_levels: dict[str, int] = {}

    def read(self, text: str) -> list[Block]:
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            i = self._step(lines, i)
        self._flush()
        return self.blocks

    def _step(self, lines: list[str], i: int) -> int:
        line = lines[i]
        if self.fmt == "md" and _FENCE.match(line):
            return self._fence(lines, i)
        heading = self._heading(lines, i)
        if heading is not None:
            level, title, used = heading
            self._flush()
            self.blocks.append(Block(title, heading=True, level=level, metadata={"element": f"h{level}"}))
            return i + used
        if not line.strip():
            self._flush()
        else:
            self.paragraph.append(line)
        return i + 1

    def _fence(self, lines: list[str], i: int) -> int:
        self._flush()
        marker = _FENCE.match(lines[i]).group(1)  # type: ignore[union-attr]
        end = i + 1
        while end < len(lines) and not lines[end].lstrip().startswith(marker):
            end += 1
        code = "\n".join(line.expandtabs(4).rstrip() for line in lines[i + 1:end]).strip("\n")
        if code.strip():
            self.blocks.append(Block(code, metadata={"element": "code"}))
        return end + 1

    def _heading(self, lines: list[str], i: int) -> tuple[int, str, int] | None:
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if self.fmt == "md":
            m = _ATX.match(line)
            if m and m.group(2).strip():
                return len(m.group(1)), " ".join(m.group(2).split()), 1
            if not self.paragraph and line.strip() and not _LIST_ITEM.match(line) and _SETEXT.match(nxt):
                return (1 if nxt.strip()[0] == "=" else 2), " ".join(line.split()), 2
        elif self.fmt == "rst" and not self.paragraph:
            over = _RST_ADORN.match(line)
            if over and nxt.strip() and i + 2 < len(lines) and lines[i + 2].strip() == line.strip():
                return self._rst_level("o" + line.strip()[0]), " ".join(nxt.split()), 3
            under = _RST_ADORN.match(nxt)
            if line.strip() and not over and under and len(nxt.strip()) >= len(line.strip()):
                return self._rst_level("u" + nxt.strip()[0]), " ".join(line.split()), 2
        return None

    def _rst_level(self, style: str) -> int:
        # RST levels follow the order in which adornment styles first appear.
        return self.rst_levels.setdefault(style, len(self.rst_levels) + 1)

    def _flush(self) -> None:
        if not self.paragraph:
            return
        lines, self.paragraph = self.paragraph, []
        if self.fmt == "rst" and _RST_IMAGE.match(lines[0].strip()):
            self.blocks.append(self._rst_image(lines))
            return
        text, images, meta = _join_lines(lines), [], {"element": "p"}
        if self.fmt == "md":
            for m in _MD_IMAGE.finditer(text):
                self._add_image(m.group(2), m.group(1), images, meta)
            text = _MD_IMAGE.sub(lambda m: m.group(1), text)
        self.blocks.append(Block(re.sub(r"[ \t]+", " ", text).strip(), images=images, metadata=meta))

    def _rst_image(self, lines: list[str]) -> Block:
        src = _RST_IMAGE.match(lines[0].strip()).group(1)  # type: ignore[union-attr]
        alt = next((ln.split(":alt:", 1)[1].strip() for ln in lines[1:] if ":alt:" in ln), "")
        images: list[ImageLike] = []
        meta: dict[str, Any] = {"element": "image"}
        self._add_image(src, alt, images, meta)
        return Block(alt, images=images, metadata=meta)

    def _add_image(self, src: str, alt: str, images: list[ImageLike], meta: dict[str, Any]) -> None:
        image, dropped = self.resolver.resolve(src)
        if image is not None:
            images.append(image)
            meta.setdefault("image_sources", []).append(src[:200])
        else:
            meta[dropped] = meta.get(dropped, 0) + 1  # type: ignore[index]
        if alt:
            meta.setdefault("alt", []).append(alt)


def _ingest_text(path: Path, source: str, options: IngestOptions) -> list[Snippet]:
    text, had_errors = read_text(path, source, options)
    suffix = path.suffix.lower()
    fmt = "md" if suffix in (".md", ".markdown") else "rst" if suffix == ".rst" else "txt"
    resolver = ImageResolver(path, options)
    try:
        blocks = _MarkupReader(fmt, resolver).read(text)
    finally:
        resolver.log_dropped()
    chunks = pack(blocks, options)
    if had_errors:
        for chunk in chunks:
            chunk.metadata["encoding_errors"] = True
    return [chunk.to_snippet(source) for chunk in chunks]


def _ingest_image(path: Path, source: str, options: IngestOptions) -> list[Snippet]:
    try:
        image = open_image(path)  # full, bounded decode: a truncated file fails here, not at embedding time
    except InputError as e:
        raise IngestError(source, f"not a readable image ({str(e).removeprefix(str(path) + ': ')})") from e
    meta = {"width": image.width, "height": image.height, "element": "image"}
    image.close()
    return [Snippet(images=[Path(source)], source=source, kind="image", metadata=meta)]


# --------------------------------------------------------------------------------------------------- API


def _handler(suffix: str, source: str) -> Callable[[Path, str, IngestOptions], Iterable[Snippet]]:
    try:
        if suffix in PDF_SUFFIXES:
            from vc2l_retriever.ingest_pdf import ingest_pdf

            return ingest_pdf
        if suffix in HTML_SUFFIXES:
            from vc2l_retriever.ingest_html import ingest_html

            return ingest_html
    except ImportError as e:  # a missing extra fails this file (with the install hint), not the whole batch
        raise IngestError(source, str(e)) from e
    return _ingest_text if suffix in TEXT_SUFFIXES else _ingest_image


def iter_file(path: str | Path, options: IngestOptions | None = None) -> Iterator[Snippet]:
    """Stream one file's snippets in reading order; a PDF is read one page at a time.

    Like :func:`ingest_file`, but memory stays bounded by one page's snippets. An :class:`IngestError` is
    raised before the first snippet for files that cannot be opened or are refused (:func:`refusal`), and after
    the snippets read so far for a PDF stopped part-way (``max_failed_pages``, ``max_file_seconds``).
    """
    options = options or IngestOptions()
    path = Path(path)
    source = os.path.abspath(path)
    refused = refusal(path, options)
    if refused:
        raise IngestError(source, refused)
    if not path.exists():
        raise IngestError(source, "file not found")
    if not path.is_file():
        raise IngestError(source, "not a regular file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise IngestError(source, f"unsupported file type {suffix or '(no suffix)'!r}; "
                                  f"supported: {' '.join(sorted(SUPPORTED_SUFFIXES))}")
    for order, snippet in enumerate(_handler(suffix, source)(path, source, options)):
        snippet.order = order
        snippet.source = source
        yield snippet


def ingest_file(path: str | Path, options: IngestOptions | None = None) -> list[Snippet]:
    """Read one file into snippets in reading order.

    Every snippet gets ``source`` (the absolute path), ``order`` (0-based within the file), ``page`` (1-based,
    PDF only), ``kind`` and provenance ``metadata``. An empty document gives an empty list.

    Raises:
        IngestError: The file is missing, unsupported, encrypted, empty, truncated or otherwise unreadable,
            refused by the containment rule, stopped by a bound (``max_failed_pages``, ``max_file_seconds``),
            or the optional dependency for its format (``pypdfium2``, ``selectolax``) is not installed; the
            message names the file.
    """
    snippets = list(iter_file(path, options))
    logger.debug("%s: %d snippets", path, len(snippets))
    return snippets


@dataclass(frozen=True)
class Found:
    """One thing met by :func:`walk_paths`.

    Attributes:
        given: The argument it came from.
        path: The file to read (as found, under ``given``), or the entry that is refused.
        refused: Why it is not read (a symlink leaving ``given``, a symlink loop), or ``None``.
    """

    given: Path
    path: Path
    refused: str | None = None


def discover(paths: Iterable[str | Path] | str | Path, *, include_hidden: bool = False,
             follow_symlinks: bool = False, include_refused: bool = False) -> Iterator[Path]:
    """Yield the files to ingest, deterministically.

    Folders are walked depth-first in name order (a folder's files before its subfolders), yielding files with
    a supported suffix; hidden entries (names starting with ``.``) are skipped unless ``include_hidden``.
    Containment: inside a folder argument, a file or folder whose real path leaves that folder (a symlink out
    of it) is refused unless ``follow_symlinks``, and symlink loops are refused. Refused entries are logged and
    left out, or, with ``include_refused``, yielded for a caller whose :func:`iter_file` (given
    ``IngestOptions.root``) reports them; :func:`walk_paths` yields them with their reasons. Folder symlinks
    are followed once per real folder, so loops end. Paths named explicitly are yielded as given, whatever
    their suffix or existence, so that :func:`ingest` reports them instead of skipping them silently. A file
    reached twice is yielded once.
    """
    for found in walk_paths(paths, include_hidden=include_hidden, follow_symlinks=follow_symlinks):
        if found.refused and not include_refused:
            logger.warning("%s: %s", os.path.abspath(found.path), found.refused)
        else:
            yield found.path


def walk_paths(paths: Iterable[str | Path] | str | Path, *, include_hidden: bool = False,
               follow_symlinks: bool = False) -> Iterator[Found]:
    """Like :func:`discover`, but yields a :class:`Found` for every file and every refused entry, in walk order."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    seen_files: set[str] = set()
    seen_dirs: set[str] = set()
    for item in paths:
        given = Path(item)
        if given.is_dir():
            for path, refused in _walk(given, seen_dirs, seen_files, include_hidden, follow_symlinks):
                yield Found(given, path, refused)
        elif (real := os.path.realpath(given)) not in seen_files:
            seen_files.add(real)
            yield Found(given, given)


def _walk(root: Path, seen_dirs: set[str], seen_files: set[str], include_hidden: bool,
          follow: bool) -> Iterator[tuple[Path, str | None]]:
    """``(path, None)`` for each file to read under ``root``, ``(path, reason)`` for each refused entry."""
    real_root = os.path.realpath(root)
    stack = [root]  # explicit stack: deep trees do not hit the recursion limit
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen_dirs:
            logger.debug("%s: already visited (symlink loop or duplicate), skipped", folder)
            continue
        seen_dirs.add(real)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            logger.warning("%s: cannot list folder (%s)", folder, e)
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith(".") and not include_hidden:
                continue
            kind, refused = _entry_kind(entry, real_root, follow)
            if refused:
                yield Path(entry.path), refused
            elif kind == "dir":
                subfolders.append(Path(entry.path))
            elif kind == "file" and (real_file := os.path.realpath(entry.path)) not in seen_files:
                seen_files.add(real_file)
                yield Path(entry.path), None
        stack.extend(reversed(subfolders))


def _entry_kind(entry: os.DirEntry[str], real_root: str, follow: bool) -> tuple[str, str | None]:
    """``(kind, refusal)`` of one folder entry: kind ``dir``, ``file`` or ``""`` (nothing to read)."""
    try:
        is_dir = entry.is_dir()
        is_file = not is_dir and entry.is_file()
    except OSError as e:  # a link that cannot be resolved
        return "", LOOP_REASON if e.errno == errno.ELOOP else None
    if not (is_dir or (is_file and Path(entry.name).suffix.lower() in SUPPORTED_SUFFIXES)):
        return "", None  # dangling links, FIFOs, devices and unsupported types are never opened
    if not entry.is_symlink():
        return ("dir" if is_dir else "file"), None  # a plain entry of a folder inside the root stays inside
    real = os.path.realpath(entry.path)
    if not follow and not is_inside(real, real_root):
        return "", _outside(real, real_root)
    if follow and is_dir and real != real_root and is_inside(real_root, real):
        # A link to a folder holding the root (``up -> ../..``, ``all -> /``) would walk everything around it.
        return "", f"symlink loop ({real} contains the folder being indexed)"
    return ("dir" if is_dir else "file"), None


def _found_options(found: Found, options: IngestOptions) -> IngestOptions:
    """Options for a file found inside a folder argument: confined to it, and its images may come from it."""
    if found.given == found.path:
        return options  # named directly: read as given
    given = Path(os.path.abspath(found.given))
    return replace(options, root=options.root if options.root is not None else given,
                   image_root=options.image_root if options.image_root is not None else given)


def ingest(paths: Iterable[str | Path] | str | Path,
           options: IngestOptions | None = None) -> Iterator[Snippet | IngestError]:
    """Discover and ingest files one at a time, yielding each file's snippets, or an :class:`IngestError`.

    Errors are yielded, never raised, so one bad file does not stop a batch. A file's error normally comes
    instead of its snippets; a PDF stopped part-way by a bound (``max_failed_pages``, ``max_file_seconds``)
    yields the pages it read, then its error. Entries refused by the containment rule (:func:`discover`) are
    yielded as errors too. Local images referenced by files found inside a folder argument may come from
    anywhere inside that folder (unless ``options.image_root`` is set).
    """
    options = options or IngestOptions()
    for found in walk_paths(paths, follow_symlinks=options.follow_symlinks):
        path = found.path
        try:
            if found.refused:
                raise IngestError(os.path.abspath(path), found.refused)
            yield from iter_file(path, _found_options(found, options))  # streams: a PDF is never held whole
        except IngestError as e:
            logger.warning("%s", e)
            yield e
        except Exception as e:  # a bug or an unforeseen library error must not end the batch
            logger.exception("%s: unexpected error", path)
            yield IngestError(os.path.abspath(path), f"unexpected {type(e).__name__}: {e}")


def ingest_snippets(paths: Iterable[str | Path] | str | Path, options: IngestOptions | None = None, *,
                    errors: list[IngestError] | None = None, raise_errors: bool = False) -> Iterator[Snippet]:
    """:func:`ingest` for callers that want snippets only: errors go to ``errors`` (or are raised).

    The framework loaders use this, so a bad file is collected the same way everywhere.
    """
    for item in ingest(paths, options):
        if isinstance(item, IngestError):
            if raise_errors:
                raise item
            if errors is not None:
                errors.append(item)  # ingest() has already logged it
            continue
        yield item
