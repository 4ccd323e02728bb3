"""Shared fixtures: small real models and the paper's reference renders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import vc2l_retriever

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "vc2l_official_render"


@pytest.fixture(scope="session")
def micro_model() -> vc2l_retriever.VC2LSentenceTransformer:
    """A random-weight micro model (compact layout): fast, deterministic, real code path."""
    return vc2l_retriever.create("micro", seed=0, device="cpu")


@pytest.fixture(scope="session")
def reader_model() -> vc2l_retriever.VC2LSentenceTransformer:
    """A random-weight micro reader (glyph stem + BERT-shaped body on the grid layout)."""
    return vc2l_retriever.create("reader-micro", seed=0, device="cpu")


@pytest.fixture(scope="session")
def official_model() -> vc2l_retriever.VC2LSentenceTransformer:
    """A tiny model on the paper's official 448x448 canvas."""
    config = vc2l_retriever.VC2LConfig(width=32, layers=1, heads=2, embed_dim=16)
    return vc2l_retriever.create(config, seed=0, device="cpu")


@pytest.fixture(scope="session")
def micro_model_dir(micro_model: vc2l_retriever.VC2LSentenceTransformer, tmp_path_factory: pytest.TempPathFactory
                    ) -> Path:
    """The micro model saved in our format."""
    path = tmp_path_factory.mktemp("models") / "micro"
    micro_model.save(str(path))
    return path


@pytest.fixture
def text_pdf(tmp_path: Path) -> Callable[[list[str]], Path]:
    """Writes a one-page PDF (fpdf2, Helvetica 14 pt) with one text line per entry, and returns its path."""

    def make(lines: list[str]) -> Path:
        import fpdf

        pdf = fpdf.FPDF()
        pdf.add_page()
        pdf.set_font("helvetica", size=14)
        for line in lines:
            pdf.cell(0, 12, text=line, new_x="LMARGIN", new_y="NEXT")
        path = tmp_path / "doc.pdf"
        pdf.output(str(path))
        return path

    return make
