"""HTML -> snippets with ``selectolax`` (lexbor): main content, headings with their text, images kept safe.

- Content root: ``<main>``, else ``[role=main]``, else a single ``<article>``, else ``<body>``. Boilerplate
  (scripts, styles, navigation, asides, forms, page headers and footers, hidden elements) is skipped.
- The DOM is walked iteratively (explicit parent/sibling links, no recursion), so 10,000 nested tags are fine.
- Block elements end a paragraph; headings start a new snippet; an image joins the snippet of the paragraph
  it sits in (or follows), with its ``alt`` and ``<figcaption>`` in the snippet text and metadata.
- Images go through :class:`ingest.ImageResolver`: local files inside the image root (their real path:
  symlinks out of it are refused unless ``follow_symlinks``), bounded ``data:`` URIs, remote URLs only with
  ``fetch_remote``; every dropped image is counted in metadata and logged in one line per kind and page.
- Bytes are decoded with the declared charset (BOM, then ``<meta charset>``), falling back to UTF-8 with
  replacement characters.
"""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vc2l_retriever.ingest import Block, ImageResolver, IngestOptions, pack, read_bytes
from vc2l_retriever.inputs import ImageLike, Snippet

try:
    from selectolax.lexbor import LexborHTMLParser, LexborNode
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("HTML ingestion needs selectolax: pip install 'vc2l-retriever[html]'") from e

logger = logging.getLogger(__name__)

BLOCK_TAGS = frozenset({
    "address", "article", "blockquote", "body", "caption", "center", "dd", "details", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main",
    "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul",
})
SKIP_TAGS = frozenset({
    "script", "style", "noscript", "template", "nav", "aside", "form", "footer", "iframe", "svg", "math",
    "button", "select", "textarea", "input", "object", "embed", "canvas", "head", "dialog", "audio", "video",
})
SKIP_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar"})
HEADINGS = {f"h{n}": n for n in range(1, 7)}
CELL_TAGS = frozenset({"td", "th"})

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


def ingest_html(path: Path, source: str, options: IngestOptions) -> list[Snippet]:
    """All snippets of one HTML file in reading order. Raises :class:`IngestError` if it cannot be read."""
    text, encoding, had_errors = _decode(path, source, options)
    tree = LexborHTMLParser(text)
    title_node = tree.head.css_first("title") if tree.head is not None else None
    title = " ".join(title_node.text().split()) if title_node is not None else ""
    root = _content_root(tree)
    if root is None:
        return []
    resolver = ImageResolver(path, options)
    walker = _Walker(resolver)
    try:
        walker.walk(root)
    finally:
        resolver.log_dropped()  # one line per kind of dropped image, however many the page has
    snippets = []
    for chunk in pack(walker.blocks, options):
        chunk.metadata["encoding"] = encoding
        if had_errors:
            chunk.metadata["encoding_errors"] = True
        if title:
            chunk.metadata["title"] = title
        snippets.append(chunk.to_snippet(source))
    return snippets


def _decode(path: Path, source: str, options: IngestOptions) -> tuple[str, str, bool]:
    """Decode with the BOM's or the declared charset; fall back to UTF-8 with replacement characters."""
    data = read_bytes(path, source, options)
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(name, errors="replace"), name, False
    match = _META_CHARSET.search(data[:4096])
    declared = match.group(1).decode("ascii").lower() if match else "utf-8"
    try:
        return data.decode(declared), declared, False
    except (LookupError, UnicodeDecodeError) as e:
        logger.warning("%s: cannot decode as %s (%s); using UTF-8 with replacement characters", source,
                       declared, type(e).__name__)
        return data.decode("utf-8", errors="replace"), "utf-8", True


def _content_root(tree: LexborHTMLParser) -> LexborNode | None:
    for selector in ("main", "[role=main]"):
        node = tree.css_first(selector)
        if node is not None:
            return node
    articles = tree.css("article")
    if len(articles) == 1:
        return articles[0]
    return tree.body


@dataclass
class _Figure:
    images: list[ImageLike] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    captions: list[str] = field(default_factory=list)


class _Walker:
    """Turns the content root into blocks: iterative DOM walk with enter/exit events."""

    def __init__(self, resolver: ImageResolver) -> None:
        self.resolver = resolver
        self.blocks: list[Block] = []
        self.buffer: list[str] = []
        self.elements: list[str] = []  # open block elements, innermost last
        self.heading = 0  # level of the heading being read, 0 outside headings
        self.pre = 0
        self.landmarks = 0  # open <article>/<main>: a <header> inside one is the article's own header
        self.figures: list[_Figure] = []
        self.pending: list[Block] = []  # images met inside a paragraph, emitted right after it

    def walk(self, root: LexborNode) -> None:
        """Visit every node under ``root`` in document order without recursion."""
        self.landmarks = int(root.tag in ("article", "main"))
        node, depth = root.child, 1
        while node is not None:
            descend = self.enter(node)
            if descend and node.child is not None:
                node, depth = node.child, depth + 1
                continue
            if descend:
                self.exit(node)  # an element without children
            while node.next is None:
                node, depth = node.parent, depth - 1
                if depth == 0 or node is None:
                    self.flush()
                    return
                self.exit(node)
            node = node.next
        self.flush()

    def enter(self, node: LexborNode) -> bool:
        """Handle a node on the way down; return whether to visit its children."""
        if node.is_text_node:
            self.buffer.append(node.text_content or "")
            return False
        if not node.is_element_node:
            return False  # comments, doctype
        tag = node.tag
        if self._skipped(node, tag):
            return False
        if tag in ("article", "main"):
            self.landmarks += 1
        if tag == "img":
            self._image(node)
        elif tag == "br":
            self._line_break()
        elif tag in CELL_TAGS:
            self.buffer.append(" ")
        elif tag in BLOCK_TAGS:
            self.flush()
            self.elements.append(tag)
            self.heading = HEADINGS.get(tag, self.heading)
            self.pre += tag == "pre"
            if tag == "figure":
                self.figures.append(_Figure())
        return True

    def exit(self, node: LexborNode) -> None:
        """Handle an element on the way up (only elements whose ``enter`` returned True)."""
        tag = node.tag
        if tag in ("article", "main"):
            self.landmarks -= 1
        if tag in CELL_TAGS:
            self.buffer.append(" ")
        if tag not in BLOCK_TAGS:
            return
        if tag == "figcaption" and self.figures:
            self.figures[-1].captions.append(self._take_text())
        elif tag == "figure" and self.figures:
            self.flush()
            self.blocks.append(_figure_block(self.figures.pop()))
        self.flush()
        if self.elements:
            self.elements.pop()
        self.heading = 0 if tag in HEADINGS else self.heading
        self.pre -= tag == "pre"

    def _line_break(self) -> None:
        if self.heading:
            self.buffer.append(" ")  # a <br> inside a heading keeps the heading whole
        else:
            self.flush()

    def _skipped(self, node: LexborNode, tag: str) -> bool:
        if tag in SKIP_TAGS:
            return True
        if tag == "header" and not self.landmarks:
            return True  # the site banner; an article's own header (title, byline) is kept
        attrs = node.attributes
        return (attrs.get("role") or "").lower() in SKIP_ROLES or "hidden" in attrs \
            or (attrs.get("aria-hidden") or "").lower() == "true"

    def _take_text(self) -> str:
        raw, self.buffer = "".join(self.buffer), []
        if self.pre:
            return "\n".join(line.expandtabs(4).rstrip() for line in raw.strip("\n").splitlines())
        return " ".join(raw.split())

    def flush(self) -> None:
        """End the current paragraph (or heading), then emit images met inside it."""
        text = self._take_text()
        if text:
            element = self.elements[-1] if self.elements else "body"
            if self.heading:
                self.blocks.append(Block(text, heading=True, level=self.heading, metadata={"element": element}))
            else:
                self.blocks.append(Block(text, metadata={"element": element}))
        self.blocks.extend(self.pending)
        self.pending = []

    def _image(self, node: LexborNode) -> None:
        attrs = node.attributes
        src = attrs.get("src") or attrs.get("data-src") or ""
        alt = " ".join((attrs.get("alt") or attrs.get("title") or "").split())
        figure = self.figures[-1] if self.figures else None
        meta: dict[str, Any] = figure.metadata if figure else {"element": "img"}
        image, dropped = self.resolver.resolve(src)
        if image is not None:
            meta.setdefault("image_sources", []).append(src[:200] if not src.startswith("data:") else "data:")
        else:
            meta[dropped] = meta.get(dropped, 0) + 1  # type: ignore[index]
        if alt:
            meta.setdefault("alt", []).append(alt)
        if figure is not None:
            figure.images.extend([image] if image is not None else [])
            return
        self.pending.append(Block(alt, images=[image] if image is not None else [], metadata=meta))


def _figure_block(figure: _Figure) -> Block:
    """A figure's images with its caption, and alt texts the caption does not already say, as one block."""
    captions = [c for c in figure.captions if c]
    alts = [a for a in figure.metadata.get("alt", []) if not any(a in c for c in captions)]
    meta = {"element": "figure", **figure.metadata}
    if captions:
        meta["captions"] = captions
    return Block(" ".join(captions + alts), images=figure.images, metadata=meta)
