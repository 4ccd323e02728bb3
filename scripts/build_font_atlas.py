"""Build the compact Unifont atlas that ships inside the package.

Run from the repository root (the font's .hex sources live in ../shared/fonts):

    python scripts/build_font_atlas.py ../shared/fonts vc2l_retriever/assets/unifont-9.0.06.npz

The atlas holds every glyph as a 16x16 bitmap packed to 32 bytes (two bytes a row, most significant bit
leftmost). Half-width (8x16) glyphs are widened the way the VC2L reference renderer does it: their one byte a
row lands in the left byte, so they occupy the left 8 columns of the 16x16 cell.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def read_hex(path: Path) -> dict[int, bytes]:
    glyphs: dict[int, bytes] = {}
    for line in path.read_text(encoding="ascii").splitlines():
        if not line.strip():
            continue
        code, bits = line.split(":")
        raw = bytes.fromhex(bits)
        if len(raw) == 16:  # 8x16 glyph: byte i goes to byte 2*i of the 32-byte cell
            cell = bytearray(32)
            cell[0::2] = raw
            raw = bytes(cell)
        if len(raw) != 32:
            raise ValueError(f"{path}: glyph U+{code} has {len(raw)} bytes")
        glyphs[int(code, 16)] = raw
    return glyphs


def main(font_dir: str, out: str) -> None:
    root = Path(font_dir)
    glyphs = read_hex(root / "unifont-9.0.06.hex")
    glyphs.update(read_hex(root / "unifont_upper-9.0.06.hex"))
    codes = np.array(sorted(glyphs), dtype=np.uint32)
    bitmaps = np.frombuffer(b"".join(glyphs[int(c)] for c in codes), dtype=np.uint8).reshape(-1, 32)
    np.savez_compressed(out, codepoints=codes, bitmaps=bitmaps)
    print(f"{len(codes)} glyphs -> {out} ({Path(out).stat().st_size / 1e6:.2f} MB)")  # noqa: T201


if __name__ == "__main__":
    main(*sys.argv[1:3])
