"""What users pass to ``encode``, turned into one type: :class:`Snippet`.

A snippet is text plus zero or more images (the paper's interleaved "segment"), optionally with provenance
(where in which document it came from). Every input kind ends up as a snippet before it is rendered:

- ``str`` is always text. It is never guessed to be a file path or a URL: pass ``pathlib.Path`` (an image file)
  or a ``PIL.Image.Image`` for images.
- ``PIL.Image.Image`` and ``pathlib.Path`` are one image with no text.
- ``{"text": ..., "image": ...}`` is the dict sentence-transformers 6 passes for multimodal inputs; ``image`` may
  be one image or a list of them, ``text`` a string or a list of strings (joined with newlines).
- :class:`Snippet` passes through.

Images given as paths are opened lazily, at render time, through :func:`open_image`, which bounds decoding.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

ImageLike = Image.Image | Path
"""An image already in memory, or the path of an image file that is opened when it is rendered."""

KINDS = ("text", "image", "text+image", "page", "empty")

# Decoding bounds. A PNG can declare 20,000 x 20,000 pixels in a few hundred bytes; decoding it would need
# 1.2 GB. We refuse anything above MAX_IMAGE_PIXELS before decoding (Pillow's own bomb check is a warning up to
# twice its limit) and files above MAX_IMAGE_BYTES without reading them.
MAX_IMAGE_PIXELS = 64_000_000
MAX_IMAGE_BYTES = 64 * 1024 * 1024
DEFAULT_IMAGE_DIR = Path(tempfile.gettempdir()) / "vc2l-images"


class InputError(ValueError):
    """An input that cannot be embedded; the message names the item.

    Attributes:
        item: The offending input object, when known (lets a caller map the error back to its position).
    """

    def __init__(self, message: str, item: Any = None) -> None:
        super().__init__(message)
        self.item = item


@dataclass
class Snippet:
    """Text plus images: the unit that is rendered to one canvas and embedded as one vector.

    Attributes:
        text: The snippet's text (may be empty).
        images: Images in reading order (``PIL.Image.Image`` or an image file ``Path``).
        source: Where it came from (a file path or URL), if known.
        page: 1-based page number for PDF snippets.
        order: Position of the snippet within its source (0-based), used as the stable locator.
        kind: ``text``, ``image``, ``text+image``, ``page`` (a rendered page image) or ``empty``;
            derived from the content when not given.
        metadata: Free-form caller data (kept in the vector store's payload).
    """

    text: str = ""
    images: list[ImageLike] = field(default_factory=list)
    source: str | None = None
    page: int | None = None
    order: int | None = None
    kind: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"Snippet.text must be str, got {type(self.text).__name__}")
        self.images = list(self.images)
        for image in self.images:
            if not isinstance(image, (Image.Image, Path)):
                raise TypeError(f"Snippet.images holds a {type(image).__name__}; expected PIL.Image.Image or Path")
        if not self.kind:
            self.kind = _kind(self.text, self.images)
        elif self.kind not in KINDS:
            raise ValueError(f"Snippet.kind must be one of {KINDS}, got {self.kind!r}")


def _kind(text: str, images: Sequence[ImageLike]) -> str:
    has_text = bool(text.strip())
    if has_text and images:
        return "text+image"
    if images:
        return "image"
    return "text" if has_text else "empty"


def _as_images(value: Any, index: int) -> list[ImageLike]:
    values = value if isinstance(value, (list, tuple)) else [value]
    images: list[ImageLike] = []
    for v in values:
        if isinstance(v, (Image.Image, Path)):
            images.append(v)
        else:
            raise TypeError(
                f"input {index}: 'image' holds a {type(v).__name__}; expected PIL.Image.Image or pathlib.Path "
                "(strings are never treated as paths)"
            )
    return images


def _as_text(value: Any, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    raise TypeError(f"input {index}: 'text' holds a {type(value).__name__}; expected str or a list of str")


def to_snippet(item: Any, index: int = 0) -> Snippet:
    """Coerce one user input to a :class:`Snippet`.

    Args:
        item: ``str``, ``PIL.Image.Image``, ``pathlib.Path`` (an image file), a ``{"text", "image"}`` dict or a
            :class:`Snippet`.
        index: The item's position in its batch, used in error messages.

    Raises:
        TypeError: For anything else, naming the item's index and type.
    """
    if isinstance(item, Snippet):
        return item
    if isinstance(item, str):
        return Snippet(text=item)
    if isinstance(item, (Image.Image, Path)):
        return Snippet(images=[item])
    if isinstance(item, dict):
        if "role" in item and "content" in item:
            raise TypeError(f"input {index}: chat messages are not supported; pass text, images or a snippet dict")
        unknown = set(item) - {"text", "image"}
        if unknown or not item:
            raise TypeError(
                f"input {index}: dict keys must be 'text' and/or 'image', got {sorted(map(str, item))}"
            )
        text = _as_text(item.get("text", ""), index)
        images = _as_images(item["image"], index) if item.get("image") is not None else []
        return Snippet(text=text, images=images)
    raise TypeError(
        f"input {index}: cannot embed a {type(item).__name__}; expected str, PIL.Image.Image, pathlib.Path, "
        "a {'text': ..., 'image': ...} dict or a Snippet"
    )


def to_snippets(items: Iterable[Any]) -> list[Snippet]:
    """Coerce a batch, naming the first bad item's index in the error."""
    return [to_snippet(item, i) for i, item in enumerate(items)]


def open_image(image: ImageLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Return ``image`` decoded as 8-bit RGB, with bounded decoding.

    Alpha is composited over white (transparent web graphics are drawn on white pages); 16-bit, CMYK, palette
    and greyscale images are converted. Raises :class:`InputError` for an empty (0-pixel) image, a file that is
    not an image, or one whose declared size exceeds ``max_pixels``.
    """
    if isinstance(image, Path):
        try:
            if image.stat().st_size > MAX_IMAGE_BYTES:
                raise InputError(f"{image}: file is larger than {MAX_IMAGE_BYTES} bytes")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(image)
        except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise InputError(f"{image}: cannot open image ({e})") from e
        try:
            return _to_rgb(im, max_pixels, str(image))
        finally:
            im.close()
    return _to_rgb(image, max_pixels, "image")


def _to_rgb(im: Image.Image, max_pixels: int, name: str) -> Image.Image:
    w, h = im.size
    if w == 0 or h == 0:
        raise InputError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise InputError(f"{name}: {w}x{h} image exceeds the {max_pixels}-pixel decoding limit")
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # animated images: the first frame
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            im = im.point(lambda v: v / 256).convert("L") if im.mode != "I" else im.convert("L")
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA"):
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return im.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{name}: cannot decode image ({e})") from e


def save_images(snippet: Snippet, image_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Paths of a snippet's images; in-memory images (PDF figures, page tiles) are saved as PNGs named by content.

    Vector-store payloads and framework metadata hold paths, never pixels. The same pixels always get the same
    file, so loading a document twice writes nothing new. ``image_dir`` defaults to ``DEFAULT_IMAGE_DIR`` (in the
    system temp folder): pass a lasting folder when the paths must outlive a reboot.
    """
    folder = Path(image_dir) if image_dir is not None else DEFAULT_IMAGE_DIR
    paths = []
    for image in snippet.images:
        if isinstance(image, Path):
            paths.append(str(image))
            continue
        rgb = image.convert("RGB")
        digest = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()[:32]
        path = folder / f"{digest}.png"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            rgb.save(path, format="PNG")
        paths.append(str(path))
    return paths
