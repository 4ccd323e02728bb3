"""The encoder end to end: inputs -> sentence-transformers encode -> L2-normalised embeddings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sentence_transformers import SentenceTransformer

import vc2l_retriever
from vc2l_retriever import InputError, Snippet, VC2LConfig, to_snippet

RED = Image.new("RGB", (64, 48), (220, 20, 20))
STRIPES = Image.fromarray((np.indices((60, 60)).sum(0) % 7 * 36).astype(np.uint8)).convert("RGB")


def mixed_batch() -> list:
    return ["a short query", RED, {"text": "caption of the red box", "image": RED},
            Snippet(text="two images", images=[RED, STRIPES]), "longer passage " * 30, {"text": "only text"},
            {"image": [STRIPES]}]


@pytest.mark.parametrize("model_name", ["micro_model", "official_model", "reader_model"])
def test_embeddings_are_unit_length_and_independent_of_batch_size_and_order(model_name: str,
                                                                         request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(model_name)
    items = mixed_batch()
    together = model.encode(items, batch_size=len(items))
    one_by_one = np.stack([model.encode([item])[0] for item in items])
    reversed_order = model.encode(items[::-1], batch_size=3)[::-1]
    assert together.shape == (len(items), model.get_embedding_dimension())
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(together, reversed_order, atol=1e-5)


def test_mixed_batch_returns_embeddings_in_input_order(micro_model: SentenceTransformer) -> None:
    items = mixed_batch()
    batch = micro_model.encode(items)
    for i, item in enumerate(items):
        np.testing.assert_allclose(batch[i], micro_model.encode([item])[0], atol=1e-5)
    # Different inputs give different vectors, so the order check above is meaningful.
    assert np.abs(batch[0] - batch[1]).max() > 1e-3


def test_dict_string_and_snippet_forms_of_the_same_input_embed_identically(micro_model: SentenceTransformer) -> None:
    e = micro_model.encode(["hello", {"text": "hello"}, Snippet(text="hello"),
                            {"text": "hi", "image": RED}, {"text": ["hi"], "image": [RED]}])
    np.testing.assert_allclose(e[0], e[1], atol=1e-6)
    np.testing.assert_allclose(e[0], e[2], atol=1e-6)
    np.testing.assert_allclose(e[3], e[4], atol=1e-6)


def test_a_string_is_never_treated_as_a_path(micro_model: SentenceTransformer, tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    RED.save(path)
    as_text, as_path, as_image = micro_model.encode([str(path), path, RED])
    np.testing.assert_allclose(as_path, as_image, atol=1e-6)
    assert np.abs(as_text - as_image).max() > 1e-3


def test_encode_query_and_document_match_encode(micro_model: SentenceTransformer) -> None:
    plain = micro_model.encode(["what is vc2l"])
    np.testing.assert_allclose(micro_model.encode_query(["what is vc2l"]), plain, atol=1e-6)
    np.testing.assert_allclose(micro_model.encode_document(["what is vc2l"]), plain, atol=1e-6)


@pytest.mark.parametrize("model_name", ["micro_model", "reader_model"])
def test_save_then_load_and_plain_sentence_transformer_give_identical_embeddings(
        model_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    model = request.getfixturevalue(model_name)
    model.save(str(tmp_path / "saved"))
    items = mixed_batch()
    expected = model.encode(items)
    loaded = vc2l_retriever.load(tmp_path / "saved")
    plain = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True, device="cpu")
    assert isinstance(loaded, SentenceTransformer)
    np.testing.assert_array_equal(loaded.encode(items), expected)
    # Plain sentence-transformers splits a small batch over all torch threads (ours uses one), so float sums
    # may round differently in the last bit.
    np.testing.assert_allclose(plain.encode(items), expected, atol=1e-6)
    assert loaded.vc2l.config == model.vc2l.config  # the renderer settings travel with the model


def test_saved_model_records_its_package_requirement(micro_model_dir: Path) -> None:
    import json

    config = json.loads((micro_model_dir / "config_sentence_transformers.json").read_text())
    assert "vc2l-retriever" in config["requirements"]
    assert (micro_model_dir / "vc2l_config.json").is_file() and not (micro_model_dir / "config.json").exists()


def test_load_of_an_unknown_name_lists_the_shipped_models() -> None:
    with pytest.raises(FileNotFoundError, match="Shipped models"):
        vc2l_retriever.load("no-such-model")


@pytest.mark.parametrize("bad, kind", [(None, "NoneType"), (3, "int"), ({"text": {"nested": 1}}, "dict"),
                                       ({"role": "user", "content": "hi"}, "chat"), (b"bytes", "bytes")])
def test_bad_inputs_raise_a_type_error_naming_the_item_index(micro_model: SentenceTransformer, bad: object,
                                                            kind: str) -> None:
    with pytest.raises(TypeError, match=r"input 1\b"):
        micro_model.encode(["fine", bad, "also fine"])


def test_empty_image_raises_an_input_error_naming_the_item(micro_model: SentenceTransformer) -> None:
    with pytest.raises(InputError, match=r"input 2: .*no pixels"):
        micro_model.encode(["ok", RED, Image.new("RGB", (0, 0))])


def test_image_with_a_huge_declared_size_is_refused_before_decoding(micro_model: SentenceTransformer,
                                                                   tmp_path: Path) -> None:
    # A real 20,000 x 20,000 PNG header whose pixel data would need 1.2 GB.
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    with pytest.raises(InputError, match=r"input 0: .*bomb.png"):
        micro_model.encode([path])


@pytest.mark.parametrize("mode", ["CMYK", "RGBA", "P", "I;16", "L", "LA", "1"])
def test_unusual_image_modes_embed_cleanly(micro_model: SentenceTransformer, mode: str) -> None:
    image = STRIPES.convert(mode) if mode != "I;16" else Image.fromarray(
        (np.arange(60 * 60).reshape(60, 60) * 17).astype(np.uint16))
    buf = io.BytesIO()
    image.save(buf, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
    reopened = Image.open(io.BytesIO(buf.getvalue()))
    e = micro_model.encode([image, reopened])
    assert np.isfinite(e).all()
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)


def test_transparent_pixels_are_composited_over_white(micro_model: SentenceTransformer) -> None:
    clear = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    np.testing.assert_allclose(micro_model.encode([clear]), micro_model.encode([white]), atol=1e-6)


def test_a_one_megabyte_string_is_truncated_to_max_chars(micro_model: SentenceTransformer) -> None:
    limit = micro_model.vc2l.config.render.max_chars
    base = "retrieval " * (limit // 10 + 1)
    e = micro_model.encode([base[:limit], base[:limit] + "x" * 1_000_000])
    np.testing.assert_allclose(e[0], e[1], atol=1e-6)


def test_to_snippet_accepts_the_documented_forms() -> None:
    assert to_snippet("x").kind == "text"
    assert to_snippet(RED).kind == "image"
    assert to_snippet({"text": "x", "image": [RED, RED]}).images == [RED, RED]
    assert to_snippet({"text": "", "image": RED}).kind == "image"


def test_config_round_trips_through_its_dict() -> None:
    config = VC2LConfig.from_preset("S/16-compact")
    assert VC2LConfig.from_dict(config.to_dict()) == config
    with pytest.raises(TypeError):
        VC2LConfig.from_dict({**config.to_dict(), "typo_field": 1})


def test_a_partial_render_override_keeps_the_presets_other_render_fields() -> None:
    config = VC2LConfig.from_preset("Ti/16-compact", width=320, heads=5, render={"max_chars": 256, "max_rows": 16})
    assert (config.render.layout, config.render.max_chars, config.render.max_rows) == ("compact", 256, 16)
    assert config.render.max_images == VC2LConfig.from_preset("Ti/16-compact").render.max_images
    model = vc2l_retriever.create("micro", device="cpu", render={"max_chars": 64})
    assert model.vc2l.config.render.layout == "compact"  # not the 448x448 official canvas
    assert model.encode(["hello"]).shape == (1, 32)


def test_presets_have_the_documented_shapes() -> None:
    paper = VC2LConfig.from_preset("B/16-448")
    assert (paper.width, paper.layers, paper.heads, paper.embed_dim, paper.grid) == (768, 12, 12, 512, (28, 28))
    model = vc2l_retriever.VisionTransformer(paper)
    assert model.positional_embedding.shape == (785, 768)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(86.6e6, rel=0.01)
    out = model(torch.zeros(1, 3, 448, 448))
    assert out.shape == (1, 512)


def test_a_query_sized_encode_runs_on_one_thread_and_a_batch_on_all_and_the_count_is_restored(
        micro_model: SentenceTransformer) -> None:
    from vc2l_retriever.hub import SMALL_ENCODE

    seen: list[int] = []
    handle = micro_model[0].register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        small = micro_model.encode(["one short query"])
        micro_model.encode(["a batch item"] * (SMALL_ENCODE + 1), batch_size=64)
        after = torch.get_num_threads()
    finally:
        handle.remove()
        torch.set_num_threads(before)
    assert seen == [1, 2] and after == 2
    torch.set_num_threads(1)
    try:  # the single-threaded vector is the same vector
        np.testing.assert_allclose(small, micro_model.encode(["one short query"] * 2)[:1], atol=1e-6)
    finally:
        torch.set_num_threads(before)
