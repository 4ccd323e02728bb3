"""Interleaved documents -> training pairs -> rendered canvases (VC2L, arXiv 2510.18703, section 3).

The data is the paper's JSONL, one document a line::

    {"text": [seg0, seg1, ...], "img": [[{"image_name": "a.png", "matched_text_index": 0}], [], ...]}

with ``img[i]`` the images of segment ``i`` (files under an image root). :class:`InterleavedDocuments` reads it
lazily through a byte-offset index (built once, saved next to the file), so a multi-gigabyte file costs one
``int64`` per line of memory.

Pair sampling follows the paper's code: a random segment ``i`` paired with ``i + 1``, or with probability
``long_range`` with ``i + 2`` at loss weight 0.5; images go to a random tile (official layout) or the image slot
(compact); modality dropout removes the text or the image of a snippet that has both; long texts are cut to a
random run of whole sentences (``aug_text``). Departures, all documented on :class:`PairConfig`:

- ``drop_rate`` here is the probability of dropping. The paper's code drops when ``random() > drop_rate``, i.e.
  with probability ``1 - drop_rate``; ``paper_dropout=True`` reproduces that.
- Every sample is a pure function of ``(seed, sample index)``, so a resumed run, any number of DataLoader
  workers and any number of ranks see exactly the same samples.
- A curriculum may cap the text length by sample index (short texts first: they are cheap and teach reading).
- ``heading_pairs`` (off by default) adds a second kind of pair from the same documents: a section heading and
  the section's text without it, the shape of a short search query and its passage (see :class:`PairConfig`).
- Missing or corrupt images are skipped and counted (``images_skipped`` in each batch), never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vc2l_retriever.inputs import InputError, Snippet, open_image
from vc2l_retriever.model import VC2LConfig, pixel_normalizer
from vc2l_retriever.render import Renderer

logger = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\n+")


@dataclass
class Document:
    """One line of the JSONL: segment texts, image file names per segment, and optional ``meta``."""

    texts: list[str]
    images: list[list[str]]
    meta: dict[str, Any] = field(default_factory=dict)


class InterleavedDocuments:
    """Random access to a JSONL of interleaved documents without loading it into memory.

    Args:
        path: The JSONL file.
        image_root: Folder that ``image_name`` entries are relative to.
        max_image_pixels: Decoding bound passed to :func:`open_image`.
    """

    def __init__(self, path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None,
                 max_image_pixels: int = 16_000_000) -> None:
        self.path = Path(path)
        self.image_root = Path(image_root) if image_root is not None else self.path.parent / "images"
        self.max_image_pixels = max_image_pixels
        self.offsets = self._load_index()
        self._handle: Any = None
        self._pid = -1

    def _load_index(self) -> np.ndarray:
        """Line start offsets, cached in ``<file>.idx.npy`` and rebuilt when the file's size or mtime changes."""
        stat = self.path.stat()
        index_path = self.path.with_name(self.path.name + ".idx.npy")
        stamp = np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)
        if index_path.is_file():
            cached = np.load(index_path)
            if cached.size >= 2 and np.array_equal(cached[:2], stamp):
                return cached[2:]
        offsets = []
        position = 0
        with open(self.path, "rb") as f:
            for line in f:
                if line.strip():
                    offsets.append(position)
                position += len(line)
        result = np.asarray(offsets, dtype=np.int64)
        try:
            tmp = index_path.with_name(index_path.name + ".tmp.npy")
            np.save(tmp, np.concatenate([stamp, result]))
            os.replace(tmp, index_path)
        except OSError as e:  # a read-only data folder only costs a rescan next time
            logger.info("cannot cache the line index of %s: %s", self.path, e)
        return result

    def __len__(self) -> int:
        return int(self.offsets.size)

    def _file(self) -> Any:
        # One handle per process: DataLoader workers are forked and must not share a file position.
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open for the object's lifetime
            self._pid = os.getpid()
        return self._handle

    def __getitem__(self, index: int) -> Document:
        f = self._file()
        f.seek(int(self.offsets[index]))
        record = json.loads(f.readline())
        texts = [str(t or "") for t in record.get("text", [])]
        images: list[list[str]] = [[] for _ in texts]
        for i, entries in enumerate(record.get("img") or []):
            for entry in entries or []:
                slot = entry.get("matched_text_index", i)
                if isinstance(slot, int) and 0 <= slot < len(texts):
                    images[slot].append(str(entry["image_name"]))
        return Document(texts, images, record.get("meta") or {})

    def load_image(self, name: str) -> Image.Image | None:
        """Decode one image; ``None`` (logged) when it is missing or corrupt."""
        try:
            return open_image(self.image_root / name, max_pixels=self.max_image_pixels)
        except (InputError, OSError, ValueError) as e:
            logger.debug("image %s skipped: %s", name, e)
            return None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None  # file handles do not pickle (spawned workers)
        return state


@dataclass
class PairConfig:
    """How pairs are drawn from documents.

    Attributes:
        long_range: Probability of pairing segment ``i`` with ``i + 2`` (weight 0.5) instead of ``i + 1``.
        long_range_weight: Loss weight of long-range pairs.
        drop_rate: Probability of dropping the text or the image (50/50) of a snippet that has both.
        paper_dropout: Use the paper code's rule instead: drop when ``random() > drop_rate``.
        aug_text: Cut texts longer than the budget to a random run of whole sentences (else: the head).
        max_chars: Text budget per snippet (the curriculum may lower it).
        curriculum: ``[[until_sample, max_chars], ...]``: before global sample ``until_sample`` texts are cut
            to ``max_chars``; after the last entry ``max_chars`` applies.
        max_images: Images kept per snippet.
        heading_pairs: Probability that a sample is (section heading, that section's first segment without the
            heading) instead of two neighbouring segments, for documents whose ``meta.headings`` name one. The
            paper pairs neighbours only; its pairs never show the model a short query beside a long passage,
            which is what most searches are. 0 draws nothing extra, so other settings sample exactly as before.
    """

    long_range: float = 0.1
    long_range_weight: float = 0.5
    drop_rate: float = 0.1
    paper_dropout: bool = False
    aug_text: bool = True
    max_chars: int = 768
    curriculum: list[list[int]] = field(default_factory=list)
    max_images: int = 1
    heading_pairs: float = 0.0

    def chars_at(self, sample: int) -> int:
        """Text budget for a global sample index."""
        for until, chars in self.curriculum:
            if sample < until:
                return min(int(chars), self.max_chars)
        return self.max_chars


MIN_SECTION_CHARS = 40  # shorter section bodies are mostly stubs ("See also"), not passages worth finding


def heading_crop(heading: str, max_chars: int) -> str:
    """A heading cut to the budget at a word boundary (headings are one line; they are never sentence-cropped)."""
    if len(heading) <= max_chars:
        return heading
    cut = heading[:max_chars]
    return cut[: cut.rindex(" ")] if " " in cut else cut


def sentence_crop(text: str, max_chars: int, rng: random.Random | None) -> str:
    """A run of whole sentences of at most ``max_chars`` characters (the head when ``rng`` is None).

    A single sentence longer than the budget is cut at the last space before it.
    """
    text = text.strip()
    if len(text) <= max_chars:
        return text
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text) if m.end() < len(text)]
    start = starts[rng.randrange(len(starts))] if rng is not None else 0
    piece = text[start:]
    if len(piece) <= max_chars:
        return piece.strip()
    cut = piece[:max_chars]
    at_word_end = piece[max_chars].isspace()
    ends = [m.start() for m in _SENTENCE_END.finditer(cut)]
    if at_word_end and cut[-1:] in ".!?:;":
        ends.append(max_chars)
    if ends and ends[-1] > max_chars // 4:
        piece = cut[: ends[-1]]
    elif at_word_end or " " not in cut:
        piece = cut
    else:
        piece = cut[: cut.rindex(" ")]
    return piece.strip()


@dataclass
class PairSample:
    """Two snippets to be pulled together, with the pair's loss weight."""

    a: Snippet
    b: Snippet
    weight: float
    images_skipped: int = 0


class PairSampler:
    """Draws :class:`PairSample` s from documents; every draw is a function of ``(seed, index)`` only."""

    def __init__(self, documents: InterleavedDocuments, config: PairConfig, seed: int = 0) -> None:
        self.documents = documents
        self.config = config
        self.seed = seed
        self._perm_epoch = -1
        self._perm: np.ndarray = np.empty(0, np.int64)

    def _document_index(self, sample: int) -> int:
        n = len(self.documents)
        epoch, position = divmod(sample, n)
        if epoch != self._perm_epoch:  # one shuffled pass over the documents per epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._perm_epoch = epoch
        return int(self._perm[position])

    def rng(self, sample: int) -> random.Random:
        """The random source of one sample."""
        digest = hashlib.blake2b(f"{self.seed}:{sample}".encode(), digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "big"))

    def sample(self, index: int) -> PairSample:
        """The pair for global sample ``index``; documents without a usable pair are skipped forward."""
        rng = self.rng(index)
        for attempt in range(len(self.documents)):
            doc = self.documents[self._document_index(index + attempt)]
            pair = self._pair(doc, rng, self.config.chars_at(index))
            if pair is not None:
                return pair
        raise ValueError(f"{self.documents.path}: no document has two usable segments")

    def _pair(self, doc: Document, rng: random.Random, max_chars: int) -> PairSample | None:
        if self.config.heading_pairs > 0 and rng.random() < self.config.heading_pairs:
            pair = self._heading_pair(doc, rng, max_chars)
            if pair is not None:
                return pair
        usable = [i for i, t in enumerate(doc.texts) if t.strip() or doc.images[i]]
        if len(usable) < 2:
            return None
        k = rng.randrange(len(usable) - 1)
        weight = 1.0
        if k + 2 < len(usable) and rng.random() < self.config.long_range:
            j, weight = usable[k + 2], self.config.long_range_weight
        else:
            j = usable[k + 1]
        skipped = [0]
        a = self._snippet(doc, usable[k], rng, max_chars, skipped)
        b = self._snippet(doc, j, rng, max_chars, skipped)
        if a.kind == "empty" or b.kind == "empty":
            return None
        return PairSample(a, b, weight, skipped[0])

    def _heading_pair(self, doc: Document, rng: random.Random, max_chars: int) -> PairSample | None:
        headings = [str(h).rstrip("¶").strip() for h in doc.meta.get("headings") or []]
        starts = []  # segments that open a section: the heading is their first line and a body follows it
        for i, text in enumerate(doc.texts[: len(headings)]):
            heading = headings[i]
            first, _, body = text.strip().partition("\n")
            if (len(heading) >= 3 and (i == 0 or headings[i - 1] != heading)
                    and first.rstrip("¶").strip() == heading and len(body.strip()) >= MIN_SECTION_CHARS):
                starts.append((i, body.strip()))
        if not starts:
            return None
        i, body = starts[rng.randrange(len(starts))]
        skipped = [0]
        query = Snippet(text=heading_crop(headings[i], max_chars))
        section = self._snippet(doc, i, rng, max_chars, skipped, text=body)
        if section.kind == "empty":
            return None
        return PairSample(query, section, 1.0, skipped[0])

    def _snippet(self, doc: Document, i: int, rng: random.Random, max_chars: int, skipped: list[int],
                 text: str | None = None) -> Snippet:
        cfg = self.config
        text = sentence_crop(doc.texts[i] if text is None else text, max_chars, rng if cfg.aug_text else None)
        images = []
        for name in doc.images[i][: cfg.max_images]:
            image = self.documents.load_image(name)
            if image is None:
                skipped[0] += 1
            else:
                images.append(image)
        if text.strip() and images and self.drop(rng):
            if rng.random() < 0.5:
                text = ""
            else:
                images = []
        return Snippet(text=text, images=images)

    def drop(self, rng: random.Random) -> bool:
        """Whether modality dropout fires (see :attr:`PairConfig.paper_dropout`)."""
        r = rng.random()
        return r > self.config.drop_rate if self.config.paper_dropout else r < self.config.drop_rate


def render_snippet(renderer: Renderer, snippet: Snippet, rng: random.Random) -> np.ndarray:
    """Render with the image in a random tile (official layout) or the image slot (compact layout)."""
    if renderer.config.layout != "official" or not snippet.images:
        return renderer.render(snippet)
    has_text = bool(snippet.text.strip())
    images = snippet.images[: 3 if has_text else 4]
    slots = rng.sample(range(4), len(images))
    tiles: list[Any] = [None] * 4
    for slot, image in zip(slots, images, strict=True):
        tiles[slot] = image
    return renderer.render_mosaic(snippet.text, tiles)


def teacher_text(renderer: Renderer, snippet: Snippet) -> str:
    """The text the student actually sees (lower-cased and cut as rendered): what the teacher must embed."""
    text = snippet.text.lower() if renderer.config.lowercase else snippet.text
    return text[: renderer.config.max_chars]


class PairDataset(torch.utils.data.Dataset):
    """Map-style dataset over global sample indices: item ``k`` is the rendered pair of sample ``k``.

    Items are dicts with ``a``/``b`` canvases (``uint8 (H, W, 3)``), ``text_a``/``text_b`` (teacher inputs,
    empty for image-only snippets), ``weight`` and ``images_skipped``. With ``gcl=True`` a snippet ``a`` that
    has text and image also yields its text-only and image-only canvases (``gcl_text``, ``gcl_image``).
    """

    def __init__(self, sampler: PairSampler, model_config: VC2LConfig, gcl: bool = False) -> None:
        self.sampler = sampler
        self.renderer = Renderer(model_config.render)
        self.gcl = gcl

    def __len__(self) -> int:
        return 2**62  # indices are global sample numbers; the trainer decides how many it draws

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.sampler.sample(index)
        rng = self.sampler.rng(-1 - index)  # a separate stream for layout choices
        item = {
            "a": render_snippet(self.renderer, pair.a, rng),
            "b": render_snippet(self.renderer, pair.b, rng),
            "text_a": teacher_text(self.renderer, pair.a),
            "text_b": teacher_text(self.renderer, pair.b),
            "weight": pair.weight,
            "images_skipped": pair.images_skipped,
        }
        if self.gcl and pair.a.kind == "text+image":
            item["gcl_text"] = self.renderer.render(Snippet(text=pair.a.text))
            item["gcl_image"] = render_snippet(self.renderer, Snippet(images=pair.a.images), rng)
        return item


class Collator:
    """Batches canvases for the trainer; :meth:`normalize` then scales them exactly as :class:`VC2LModule` does.

    Training batches are *ragged*: the canvases of a view are stacked row-wise, unpadded, into one ``uint8
    (sum of heights, W, 3)`` tensor with each canvas's ``patch_rows``; the trainer cuts them into height buckets
    on its device. Padding every canvas to the tallest would ship about three times the bytes (a 512-pair batch of
    the GPU recipe: 308 MB padded, mean height a third of the tallest), and the uint8 form is a quarter of float32
    through the worker pipes and the host-to-GPU copy. :meth:`pixels` gives the padded form (evaluation).
    """

    def __init__(self, model_config: VC2LConfig) -> None:
        self.config = model_config
        self.mean, self.std = pixel_normalizer(model_config)

    def _rows(self, canvases: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.tensor([c.shape[0] // self.config.patch_size for c in canvases], dtype=torch.long)

    def pixels(self, canvases: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Padded: ``pixel_values (B, 3, H, W) uint8`` and ``patch_rows (B,)``."""
        height = max(c.shape[0] for c in canvases)
        batch = np.full((len(canvases), height, canvases[0].shape[1], 3), self.config.render.background, np.uint8)
        for k, canvas in enumerate(canvases):
            batch[k, : canvas.shape[0]] = canvas
        return {"pixel_values": torch.from_numpy(batch).permute(0, 3, 1, 2), "patch_rows": self._rows(canvases)}

    def ragged(self, canvases: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Unpadded: ``pixel_values (sum of H, W, 3) uint8`` (canvases one under another) and ``patch_rows (B,)``."""
        return {"pixel_values": torch.from_numpy(np.concatenate(canvases)), "patch_rows": self._rows(canvases)}

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``uint8 (B, 3, H, W)`` canvases (on any device) -> the model's normalised float input."""
        mean, std = self.mean.to(pixels.device), self.std.to(pixels.device)
        return (pixels.float().div_(255) - mean) / std

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "a": self.ragged([it["a"] for it in items]),
            "b": self.ragged([it["b"] for it in items]),
            "text_a": [it["text_a"] for it in items],
            "text_b": [it["text_b"] for it in items],
            "weight": torch.tensor([it["weight"] for it in items], dtype=torch.float32),
            "images_skipped": sum(it["images_skipped"] for it in items),
        }
        gcl = [it for it in items if "gcl_text" in it]
        if gcl:
            batch["gcl"] = {key: self.ragged([it[f"gcl_{key}"] for it in gcl]) for key in ("text", "image")}
            batch["gcl"]["fused"] = self.ragged([it["a"] for it in gcl])
        return batch


class SampleRange(torch.utils.data.Sampler[int]):
    """Global sample indices ``start, start + 1, ...`` for one rank: rank ``r`` of ``w`` takes the ``r``-th slice
    of every global batch, so ``w`` ranks together see what one process would."""

    def __init__(self, start: int, stop: int, global_batch: int, rank: int = 0, world: int = 1) -> None:
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} does not divide among {world} ranks")
        self.start, self.stop, self.global_batch, self.rank, self.world = start, stop, global_batch, rank, world

    def __iter__(self) -> Any:
        local = self.global_batch // self.world
        for base in range(self.start, self.stop, self.global_batch):
            first = base + self.rank * local
            yield from range(first, min(first + local, self.stop))

    def __len__(self) -> int:
        return (self.stop - self.start) // self.world

