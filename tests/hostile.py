"""A corpus of hostile inputs, generated on demand in a temporary folder (nothing large is committed).

:func:`build_corpus` writes every case under ``root`` and returns the list of :class:`Case` records saying what
a correct ingester does with each file: read it (``ok``), read it to nothing (``empty``), refuse it with an
error whose reason contains ``reason`` (``error``), read part of it and then report it (``partial``), or never
reach it when walking the folder (``ignored``). Files are small or sparse: the "200 MB" files take no disk space,
the 2,000-page PDF is about 300 KB, the PDF claiming a million pages 600 bytes.

Symlinks out of the corpus point into a sibling folder, ``<root>-outside`` (see :func:`outside_folder`), whose
files hold :data:`SECRET`: it must never reach the index unless ``follow_symlinks`` is set.
"""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

OK, EMPTY, ERROR, IGNORED, PARTIAL = "ok", "empty", "error", "ignored", "partial"

# Error categories: each is a substring of the IngestError reason the ingester gives.
BAD_IMAGE = "not a readable image"
BAD_PDF = "not a valid PDF"
NEEDS_PASSWORD = "a password is required"
EMPTY_FILE = "empty file"
NO_PAGES = "PDF has no pages"
NO_PAGE_READ = "no page could be read"
TOO_LARGE = "larger than max_file_bytes"
OUTSIDE = "symlink resolves outside the folder being indexed"
LOOP = "symlink loop"
FAILED_RUN = "stopped after 20 consecutive pages failed to load"

SECRET = "root:x:0:0:root:/root:/bin/bash"
LYING_COUNT = 1_000_000
BROKEN_PAGES = 3000

BIG_TEXT_BYTES = 10 * 1024 * 1024
PDF_PAGES = 2000


@dataclass(frozen=True)
class Case:
    """One hostile file and what a correct ingester does with it.

    Attributes:
        name: Path relative to the corpus root (as written; may hold odd characters).
        what: One-line description.
        expect: ``ok``, ``empty``, ``error``, ``partial`` or ``ignored`` (see the module docstring).
        reason: For ``error`` and ``partial``: a substring of the reason. For ``ok``: a metadata key whose count
            must be > 0 (e.g. ``refused_images``), or ``""``.
    """

    name: str
    what: str
    expect: str
    reason: str = ""


def _noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A noisy image: compresses badly, so truncating its file cuts into the pixel data."""
    rng = random.Random(seed)
    channels = len(Image.new(mode, (1, 1)).getbands())
    data = bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * channels))
    return Image.frombytes(mode, size, data)


def _encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_declaring(width: int, height: int) -> bytes:
    """A structurally valid PNG header declaring ``width`` x ``height`` RGB pixels, with one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def _corrupt(data: bytes, keep: int = 24, seed: int = 1) -> bytes:
    """Keep the header, replace everything after it with random bytes (same length)."""
    rng = random.Random(seed)
    return data[:keep] + bytes(rng.getrandbits(8) for _ in range(len(data) - keep))


def _sparse(path: Path, head: bytes, size: int) -> None:
    """A file of ``size`` bytes that takes no disk space beyond ``head``."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


# --------------------------------------------------------------------------------------------------- images


def _image_cases(root: Path) -> list[Case]:
    d = root / "images"
    d.mkdir()
    cases: list[Case] = []

    def write(name: str, data: bytes, what: str, expect: str, reason: str = "") -> None:
        (d / name).write_bytes(data)
        cases.append(Case(f"images/{name}", what, expect, reason))

    noisy = _noise((96, 64))
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("GIF", "gif"), ("TIFF", "tif")):
        data = _encoded(noisy, fmt)
        write(f"truncated.{ext}", data[: len(data) // 2], f"{fmt} cut in half", ERROR, BAD_IMAGE)
        write(f"corrupt.{ext}", _corrupt(data), f"{fmt} header followed by random bytes", ERROR, BAD_IMAGE)
    write("bomb_10G.png", png_declaring(100_000, 100_000), "PNG declaring 10^10 pixels (Pillow's bomb error)",
          ERROR, BAD_IMAGE)
    bomb = Image.new("1", (9000, 9000))  # 81 Mpx: under Pillow's own limit, over ours; 10 KB on disk
    write("bomb_81M.png", _encoded(bomb, "PNG", optimize=True), "valid 9000x9000 PNG (over the 64 Mpx limit)",
          ERROR, BAD_IMAGE)
    write("zero.png", png_declaring(0, 0), "PNG declaring 0x0 pixels", ERROR, BAD_IMAGE)
    write("empty.png", b"", "0-byte file named .png", ERROR, BAD_IMAGE)
    write("svg_named.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
          "SVG document named .png", ERROR, BAD_IMAGE)
    write("html_named.jpg", b"<html><body>not a picture</body></html>", "HTML named .jpg", ERROR, BAD_IMAGE)
    _sparse(d / "sparse_100M.png", png_declaring(64, 64), 100 * 1024 * 1024)
    cases.append(Case("images/sparse_100M.png", "100 MB (sparse) file with a PNG header", ERROR, BAD_IMAGE))

    write("tall_1x100000.png", _encoded(Image.new("RGB", (1, 100_000), (9, 9, 9)), "PNG"), "1x100000 PNG", OK)
    write("wide_100000x1.png", _encoded(Image.new("L", (100_000, 1), 200), "PNG"), "100000x1 PNG", OK)
    write("cmyk.jpg", _encoded(_noise((40, 30), "CMYK"), "JPEG"), "CMYK JPEG", OK)
    sixteen = Image.frombytes("I;16", (40, 30), bytes(range(256)) * 9 + bytes(range(96)))
    write("grey16.png", _encoded(sixteen, "PNG"), "16-bit greyscale PNG", OK)
    write("float32.tif", _encoded(Image.new("F", (40, 30), 0.5), "TIFF"), "32-bit float TIFF", OK)
    palette = Image.new("P", (40, 30), 3)
    palette.putpalette([i % 256 for i in range(768)])
    write("palette_transparent.png", _encoded(palette, "PNG", transparency=3), "palette PNG with transparency", OK)
    write("rgba.png", _encoded(Image.new("RGBA", (40, 30), (255, 0, 0, 0)), "PNG"), "fully transparent RGBA", OK)
    write("la.png", _encoded(Image.new("LA", (40, 30), (10, 128)), "PNG"), "grey + alpha PNG", OK)
    frames = [Image.new("P", (32, 32), i) for i in range(3)]
    write("animated.gif", _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0),
          "3-frame animated GIF", OK)
    write("jpeg_named.png", _encoded(noisy, "JPEG"), "JPEG named .png", OK)
    write("one_bit.bmp", _encoded(Image.new("1", (33, 17), 1), "BMP"), "1-bit BMP", OK)
    return cases


# --------------------------------------------------------------------------------------------------- PDFs


def _fpdf_bytes(build: Callable[[object], None], **encryption: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    build(pdf)
    if encryption:
        pdf.set_encryption(**encryption)
    return bytes(pdf.output())


def _text_page(text: str) -> Callable[[object], None]:
    def build(pdf: object) -> None:
        pdf.add_page()  # type: ignore[attr-defined]
        pdf.multi_cell(0, 8, text)  # type: ignore[attr-defined]
    return build


def _many_pages(pdf: object) -> None:
    # Core font, one short line per page: fpdf2 writes 2,000 pages in about a second.
    for i in range(PDF_PAGES):
        pdf.add_page()  # type: ignore[attr-defined]
        pdf.cell(text=f"page {i + 1} of the long report")  # type: ignore[attr-defined]


def _pdf_with_corrupt_image(root: Path, header: bool) -> bytes:
    """A text page with an embedded JPEG whose header (``header``) or pixel data is overwritten with random bytes.

    fpdf2 copies JPEG files into the PDF unchanged (DCTDecode), so the JPEG's bytes can be found and damaged
    without touching the PDF's structure (lengths and offsets stay valid).
    """
    jpeg = _encoded(_noise((120, 90), seed=5), "JPEG", quality=90)
    source = root / ".tmp_embedded.jpg"
    source.write_bytes(jpeg)

    def build(pdf: object) -> None:
        pdf.add_page()  # type: ignore[attr-defined]
        pdf.multi_cell(0, 8, "The chart below is damaged but this caption survives.")  # type: ignore[attr-defined]
        pdf.image(str(source), w=60)  # type: ignore[attr-defined]

    data = _fpdf_bytes(build)
    source.unlink()
    start = data.index(jpeg[:64])
    keep = 4 if header else jpeg.index(b"\xff\xda") + 12  # after SOI, or after the start of scan
    return data[:start] + _corrupt(jpeg, keep=keep, seed=7) + data[start + len(jpeg):]


def pdf_from_objects(objects: list[bytes]) -> bytes:
    """A PDF with a correct cross-reference table; object ``i + 1`` is ``objects[i]``, the catalog is object 1."""
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def _one_text_page(kids: bytes, count: int) -> bytes:
    text = b"BT /F1 12 Tf 10 50 Td (only this page exists in the file) Tj ET"
    return pdf_from_objects([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(count).encode() + b" >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 100] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(text)).encode() + b" >>\nstream\n" + text + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ])


def pdf_claiming_pages(count: int) -> bytes:
    """A 600-byte PDF with one text page whose page tree claims ``count`` pages (``len(pdf)`` believes it)."""
    return _one_text_page(b"3 0 R", count)


def pdf_with_broken_pages(pages: int, good: Callable[[int], bool]) -> bytes:
    """A PDF whose page tree lists ``pages`` kids: page ``i`` (1-based) is a text page if ``good(i)``, else an
    object that is not a page, which pdfium refuses to load ("Failed to load page")."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
               b"<< /Type /Font >>"]  # object 4: what every broken kid points to
    kids = []
    for i in range(1, pages + 1):
        if not good(i):
            kids.append(b"4 0 R")
            continue
        text = f"BT /F1 12 Tf 10 50 Td (readable page {i} of the broken report) Tj ET".encode()
        objects.append(f"<< /Length {len(text)} >>\nstream\n".encode() + text + b"\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 100] /Contents {len(objects)} 0 R"
                       " /Resources << /Font << /F1 3 0 R >> >> >>".encode())
        kids.append(f"{len(objects)} 0 R".encode())
    objects[1] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + f"] /Count {pages} >>".encode()
    return pdf_from_objects(objects)


def _pdf_cases(root: Path) -> list[Case]:
    d = root / "pdf"
    d.mkdir()
    cases: list[Case] = []

    def write(name: str, data: bytes, what: str, expect: str, reason: str = "") -> None:
        (d / name).write_bytes(data)
        cases.append(Case(f"pdf/{name}", what, expect, reason))

    good = _fpdf_bytes(_text_page("Quarterly numbers went up. " * 30))
    write("empty.pdf", b"", "0-byte PDF", ERROR, EMPTY_FILE)
    write("locked.pdf", _fpdf_bytes(_text_page("secret numbers for the board"), owner_password="o", user_password="u"),
          "encrypted PDF needing a user password", ERROR, NEEDS_PASSWORD)
    write("owner_only.pdf", _fpdf_bytes(_text_page("restricted but readable"), owner_password="o"),
          "encrypted PDF with only an owner password (opens without one)", OK)
    write("truncated.pdf", good[: len(good) // 2], "PDF cut in half", ERROR, BAD_PDF)
    write("malformed.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage", "PDF header, no structure",
          ERROR, BAD_PDF)
    write("png_named.pdf", _encoded(Image.new("RGB", (8, 8)), "PNG"), "PNG named .pdf", ERROR, BAD_PDF)
    no_pages = pdf_from_objects([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])
    write("no_pages.pdf", no_pages, "valid PDF with zero pages", ERROR, NO_PAGES)
    write("count_lies.pdf", _one_text_page(b"3 0 R", 5), "page tree claims 5 pages, holds 1", OK)
    write("phantom_pages.pdf", _one_text_page(b"", 3), "page tree claims 3 pages, holds none", ERROR, NO_PAGE_READ)
    write("pages_2000.pdf", _fpdf_bytes(_many_pages), f"{PDF_PAGES}-page PDF", OK)
    write("corrupt_image_header.pdf", _pdf_with_corrupt_image(root, header=True),
          "PDF whose embedded JPEG has a corrupt header (image skipped, text kept)", OK, "images_skipped")
    write("corrupt_image_data.pdf", _pdf_with_corrupt_image(root, header=False),
          "PDF whose embedded JPEG has corrupt pixel data (decoded as noise, text kept)", OK)
    nested = b"%PDF-1.4\n1 0 obj " + b"[" * 100_000 + b"]" * 100_000 + b" endobj\n%%EOF\n"
    write("nested_arrays.pdf", nested, "100,000 nested arrays (parser recursion)", ERROR, BAD_PDF)
    write("count_million.pdf", pdf_claiming_pages(LYING_COUNT),
          f"page tree claims {LYING_COUNT:,} pages, holds 1 (read, then stopped)", PARTIAL, FAILED_RUN)
    write("broken_3000.pdf", pdf_with_broken_pages(BROKEN_PAGES + 1, lambda i: i == 1),
          f"one text page, then {BROKEN_PAGES:,} pages that fail to load", PARTIAL, FAILED_RUN)
    write("broken_interleaved.pdf", pdf_with_broken_pages(2000, lambda i: i % 20 == 1),
          "2,000 pages: one text page, then 19 that fail to load, over and over (never 20 in a row)", OK)
    return cases


# --------------------------------------------------------------------------------------------------- HTML


def _html_cases(root: Path) -> list[Case]:
    d = root / "html"
    d.mkdir()
    (d / "fig.png").write_bytes(_encoded(Image.new("RGB", (48, 48), (0, 120, 0)), "PNG"))
    (d / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    cases: list[Case] = []

    def write(name: str, data: bytes | str, what: str, expect: str, reason: str = "") -> None:
        (d / name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        cases.append(Case(f"html/{name}", what, expect, reason))

    (d / "linked.png").symlink_to(outside_folder(root) / "pic.png")
    cases.append(Case("html/fig.png", "the image the HTML pages use", OK))
    cases.append(Case("html/linked.png", "symlink to an image outside the folder", ERROR, OUTSIDE))
    cases.append(Case("html/bomb.png", "bomb PNG referenced by a page", ERROR, BAD_IMAGE))
    write("nested_10000.html", "<body>" + "<div><b>" * 5000 + "deep" + "</b></div>" * 5000 + "</body>",
          "10,000 nested tags", OK)
    write("bad_utf8.html", b'<meta charset="utf-8"><p>caf\xe9 \xff\xfe ok</p>', "invalid UTF-8 bytes", OK,
          "encoding_errors")
    write("unknown_charset.html", b'<meta charset="klingon-9"><p>plain words</p>', "unknown charset", OK)
    write("utf16.html", "\ufeff<p>sixteen bit text \U0001f600</p>".encode("utf-16-le"), "UTF-16 with BOM", OK)
    write("img_escape.html", '<p>look <img src="../../etc/passwd"> <img src="../../../../../../etc/shadow">'
          ' <img src="file:///etc/passwd"> <img src="javascript:alert(1)"></p>',
          "img src escaping the folder / odd schemes", OK, "refused_images")
    write("img_remote.html", '<p>far <img src="http://example.com/a.png"> <img src="https://example.com/b.png">'
          ' <img src="//cdn.example.com/c.png"></p>', "img src pointing to URLs", OK, "remote_images_skipped")
    write("img_missing.html", '<p>gone <img src="nothere.png"> <img src="sub/none.jpg"></p>', "img src missing",
          OK, "missing_images")
    write("img_bad.html", '<p>bad <img src="bomb.png"> <img src="data:image/png;base64,AAAA"> '
          '<img src="data:image/png;base64,' + _b64(png_declaring(100_000, 100_000)) + '"></p>',
          "img src: bomb file, broken and bomb data: URIs", OK, "invalid_images")
    write("img_link.html", '<p>linked figure <img src="linked.png"></p>', "img src: a symlink out of the folder",
          OK, "refused_images")
    write("img_good.html", '<h1>Figure</h1><p>green square <img src="fig.png" alt="green"></p>',
          "a good page (control)", OK)
    write("empty.html", b"", "0-byte HTML", EMPTY)
    write("script_only.html", "<html><head><script>var x = 1;</script></head><body><nav>menu</nav></body></html>",
          "only boilerplate", EMPTY)
    write("unclosed.html", "<p>unclosed <b><i><table><tr><td>cell" + "<" * 1000, "unclosed tags and stray <", OK)
    return cases


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------------------- text


def _text_cases(root: Path) -> list[Case]:
    d = root / "text"
    d.mkdir()
    cases: list[Case] = []

    def write(name: str, data: bytes | str, what: str, expect: str, reason: str = "") -> None:
        (d / name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        cases.append(Case(f"text/{name}", what, expect, reason))

    line = "The quick brown fox jumps over the lazy dog again and again. "
    big = (line * (BIG_TEXT_BYTES // len(line) + 1))[:BIG_TEXT_BYTES]
    write("big_10MB.txt", big, "10 MB of text", OK)
    write("one_word_1MB.txt", "x" * (1 << 20), "a single 1 MB word", OK)
    write("controls.txt", "".join(map(chr, range(32))) + "\x7f\x80\x9f visible words", "C0/C1 control characters",
          OK)
    write("nul.txt", b"\x00" * 4096 + b"after the nulls", "NUL bytes", OK)
    write("surrogates_wtf8.txt", b"lone \xed\xa0\x80 high and \xed\xb0\x80 low surrogate", "UTF-8-encoded lone "
          "surrogates (invalid UTF-8)", OK, "encoding_errors")
    write("surrogate_utf16.txt", b"\xff\xfe" + "a".encode("utf-16-le") + b"\x00\xd8" + "b".encode("utf-16-le"),
          "UTF-16 with a lone surrogate", OK)
    write("astral.md", "# Emoji \U0001f600\n\nMath \U0001d400\U0001d401, CJK ext B \U00020000, "
          "flags \U0001f1fa\U0001f1f8, ZWJ \U0001f468\u200d\U0001f469\u200d\U0001f467", "astral characters", OK)
    write("rtl.txt", "\u202eevil.exe\u202c \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u200f"
          "mixed 123 \u202b\u0627\u0644\u0639\u0631\u0628\u064a\u0629\u202c", "right-to-left and bidi overrides", OK)
    write("random_bytes.txt", random.Random(3).randbytes(20_000), "random bytes",
          OK, "encoding_errors")
    write("empty.txt", b"", "0-byte text", EMPTY)
    write("whitespace.md", " \n\t\n\r\n   \n", "whitespace only", EMPTY)
    write("md_escape.md", "![pw](../../etc/passwd) ![url](file:///etc/passwd) text stays",
          "Markdown images escaping the folder", OK, "refused_images")
    _sparse(d / "sparse_200MB.txt", b"header line\n", 200 * 1024 * 1024)
    cases.append(Case("text/sparse_200MB.txt", "200 MB (sparse) text file", ERROR, TOO_LARGE))
    return cases


# --------------------------------------------------------------------------------------------------- file system


def outside_folder(root: Path) -> Path:
    """The sibling folder that the corpus's outward symlinks point into (written by :func:`build_corpus`)."""
    return root.parent / f"{root.name}-outside"


def _outside_files(root: Path) -> None:
    outside = outside_folder(root)
    (outside / "secret_dir").mkdir(parents=True)
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    (outside / "secret_dir" / "leak.md").write_text(f"# Leaked\n\n{SECRET}", encoding="utf-8")
    (outside / "pic.png").write_bytes(_encoded(Image.new("RGB", (48, 48), (120, 0, 0)), "PNG"))


def _fs_cases(root: Path) -> list[Case]:
    d = root / "fs"
    (d / "sub").mkdir(parents=True)
    outside = outside_folder(root)
    (d / "passwd.txt").symlink_to(outside / "secret.txt")  # as "passwd.txt -> /etc/passwd"
    (d / "outside_dir").symlink_to(outside / "secret_dir", target_is_directory=True)
    (d / "loop_a.txt").symlink_to("loop_b.txt")  # a -> b -> a: resolving either fails with ELOOP
    (d / "loop_b.txt").symlink_to("loop_a.txt")
    (d / "sub" / "inner.txt").write_text("inside the looped folder", encoding="utf-8")
    (d / "sub" / "loop").symlink_to(d, target_is_directory=True)  # fs/sub/loop -> fs: a cycle
    (d / "self").symlink_to(".", target_is_directory=True)  # fs/self -> fs
    (d / "dangling.png").symlink_to(d / "does-not-exist.png")
    os.mkfifo(d / "fifo.txt")  # reading it would block forever
    (d / ".hidden.txt").write_text("hidden", encoding="utf-8")
    (d / "notes.docx").write_bytes(b"PK\x03\x04 not supported")
    (d / "new\nline.txt").write_text("a file name with a newline", encoding="utf-8")
    odd = os.fsencode(str(d)) + b"/bad\xffname.txt"  # not valid UTF-8: Python sees a lone surrogate
    with open(odd, "wb") as f:
        f.write(b"a file name that is not UTF-8")
    with open(odd.replace(b".txt", b".pdf"), "wb") as f:
        f.write(b"%PDF-1.7 broken, and its name is not UTF-8 either")
    deep = d
    for i in range(60):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("sixty folders down", encoding="utf-8")
    deep_name = str(deep.relative_to(root) / "deep.txt")
    return [
        Case("fs/passwd.txt", "symlink to a file outside the folder", ERROR, OUTSIDE),
        Case("fs/outside_dir", "symlink to a folder outside the folder", ERROR, OUTSIDE),
        Case("fs/loop_a.txt", "symlink loop a -> b -> a", ERROR, LOOP),
        Case("fs/loop_b.txt", "symlink loop b -> a -> b", ERROR, LOOP),
        Case("fs/sub/inner.txt", "file inside a symlink loop (read once)", OK),
        Case("fs/sub/loop", "directory symlink loop", IGNORED),
        Case("fs/self", "directory symlink to itself", IGNORED),
        Case("fs/dangling.png", "dangling symlink", IGNORED),
        Case("fs/fifo.txt", "named pipe", IGNORED),
        Case("fs/.hidden.txt", "hidden file", IGNORED),
        Case("fs/notes.docx", "unsupported suffix", IGNORED),
        Case("fs/new\nline.txt", "newline in the file name", OK),
        Case(os.fsdecode(b"fs/bad\xffname.txt"), "file name that is not valid UTF-8", OK),
        Case(os.fsdecode(b"fs/bad\xffname.pdf"), "broken PDF whose name is not valid UTF-8", ERROR, BAD_PDF),
        Case(deep_name, "60 nested folders", OK),
    ]


def build_corpus(root: Path) -> list[Case]:
    """Write the hostile corpus under ``root`` (which must exist and be empty) and the files its symlinks point
    to in :func:`outside_folder` (which must not exist); return its cases."""
    _outside_files(root)
    cases = _image_cases(root) + _pdf_cases(root) + _html_cases(root) + _text_cases(root) + _fs_cases(root)
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases
