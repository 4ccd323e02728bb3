"""The reader: grid layout alignment, dense targets and losses, the teacher-body surgery, and the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vc2l_retriever
from vc2l_retriever import RenderConfig, Renderer, Snippet, VC2LConfig
from vc2l_retriever.reader import Reader
from vc2l_retriever.render import CELL_W, GLYPH, _font, grid_cells
from vc2l_retriever.training.dense import (
    build_targets,
    cell_pieces,
    char_choice_loss,
    char_loss,
    layer_loss,
    relative_distance,
)
from vc2l_retriever.training.teacher_body import TeacherOutput

GRID = RenderConfig(layout="grid", max_chars=512, max_rows=4, max_images=1)


def cell_pixels(canvas: np.ndarray, cell: int, columns: int = 28, width: int = 1) -> np.ndarray:
    row, col = divmod(cell, columns)
    return canvas[row * GLYPH:(row + 1) * GLYPH, col * CELL_W:(col + width) * CELL_W, 0]


def glyph(ch: str, width: int = 1) -> np.ndarray:
    font = _font()
    bitmap = font.bitmaps[font.indices(ch, wrap_astral=False)[0]][:, : width * CELL_W]
    return np.where(bitmap, 0, 127).astype(np.uint8)


def test_each_ascii_character_sits_in_its_own_cell_and_lines_wrap_at_28_cells() -> None:
    text = "abcdefghijklmnopqrstuvwxyz0123456789"  # 36 characters: the 29th starts line 2
    canvas = Renderer(GRID).render(Snippet(text=text))
    assert canvas.shape == (2 * GLYPH, 224, 3)
    np.testing.assert_array_equal(grid_cells(text, 28, 4), np.arange(36))
    for k, ch in enumerate(text):
        np.testing.assert_array_equal(cell_pixels(canvas, k), glyph(ch))


def test_wide_characters_take_two_cells_and_never_straddle_a_line_end() -> None:
    text = "a" * 27 + "中b"  # the wide glyph would start in the last cell of line 1: it moves to line 2
    cells = grid_cells(text, 28, 4)
    assert cells.tolist() == list(range(27)) + [28, 30]
    canvas = Renderer(GRID).render(Snippet(text=text))
    np.testing.assert_array_equal(cell_pixels(canvas, 27), np.full((GLYPH, CELL_W), 127))  # left blank
    np.testing.assert_array_equal(cell_pixels(canvas, 28, width=2), glyph("中", width=2))
    np.testing.assert_array_equal(cell_pixels(canvas, 30), glyph("b"))


def test_astral_characters_get_a_cell_and_text_past_the_last_row_gets_none() -> None:
    text = "x😀y"
    cells = grid_cells(text, 28, 4)
    assert cells.tolist()[0] == 0 and cells.tolist()[2] == cells.tolist()[1] + (2 if _font().wide[
        _font().indices("😀", wrap_astral=False)[0]] else 1)
    assert (grid_cells("z" * 200, 28, 4) >= 0).sum() == 4 * 28


def test_grid_text_is_lower_cased_and_whitespace_runs_become_one_space() -> None:
    assert Renderer(GRID).prepare_text("  Hello\n\n\tWORLD  ") == "hello world"


def test_cell_pieces_map_each_character_to_the_wordpiece_covering_it() -> None:
    # "hello wo" tokenised by hand: [CLS] hello wo ##rld? here: [CLS](0,0) hello(0,5) wo(6,8) [SEP](0,0) pad
    offsets = np.array([[0, 0], [0, 5], [6, 8], [0, 0], [0, 0]])
    keep = np.array([1, 1, 1, 1, 0], bool)
    pieces = cell_pieces("hello wo", offsets, keep, columns=28, max_rows=4)
    assert pieces == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 6: 2, 7: 2}  # the space (cell 5) has no target


def test_token_weights_average_the_wordpieces_a_patch_covers_by_character_count() -> None:
    offsets = torch.tensor([[[0, 0], [0, 5], [6, 8], [0, 0]]])
    teacher = TeacherOutput(ids=torch.tensor([[101, 7592, 24185, 102]]), keep=torch.ones(1, 4, dtype=torch.bool),
                            offsets=offsets, states=torch.empty(0), sentence=torch.empty(0))
    targets = build_targets(["hello wo"], teacher, n_cells=28, cells_per_token=4, columns=28, max_rows=4)
    w = targets.token_weights[0]
    assert w.shape == (9, 4)  # [CLS] + 7 patches of a 28-cell row + [SEP]
    np.testing.assert_allclose(w[0], [1, 0, 0, 0])  # [CLS]
    np.testing.assert_allclose(w[1], [0, 1, 0, 0])  # "hell"
    np.testing.assert_allclose(w[2], [0, 1 / 3, 2 / 3, 0])  # "o wo": 1 char of hello, 2 of wo, a space
    np.testing.assert_allclose(w[3], [0, 0, 0, 1])  # [SEP] follows the last patch with text
    assert w[4:].sum() == 0
    assert targets.cell_piece[0, :8].tolist() == [1, 1, 1, 1, 1, -1, 2, 2]


def test_relative_distance_and_char_loss_match_a_hand_computed_case() -> None:
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    # cos = 0; |s - t|^2 / |t|^2 = (1 + 4) / 4
    assert relative_distance(s, t).item() == pytest.approx(1.0 + 1.25)
    table = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    cells = torch.tensor([[[2.0, 0.0], [5.0, 5.0], [0.0, 3.0]]])  # cell 1 has no target and must not count
    loss = char_loss(cells, torch.tensor([[0, -1, 1]]), piece_ids=torch.tensor([[1, 2]]), word_table=table)
    assert loss.item() == pytest.approx(0.0)
    off = char_loss(torch.tensor([[[0.0, 2.0]]]), torch.tensor([[0]]), torch.tensor([[1]]), table)
    assert off.item() == pytest.approx(1.0 + 8.0 / 4.0)  # cos 0, |(-2, 2)|^2 / |(2, 0)|^2


def test_char_choice_loss_is_a_cross_entropy_over_the_batchs_wordpieces() -> None:
    table = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    cells = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # cell 0 points at word 1, cell 1 at word 2
    pieces, ids = torch.tensor([[0, 1]]), torch.tensor([[1, 2]])
    # cosine logits / 0.05: each cell [20, 0] toward its own word -> loss log(1 + e^-20) per cell
    assert char_choice_loss(cells, pieces, ids, table).item() == pytest.approx(np.log1p(np.exp(-20.0)), abs=1e-6)
    wrong = char_choice_loss(cells.flip(-1), pieces, ids, table).item()
    assert wrong == pytest.approx(20.0 + np.log1p(np.exp(-20.0)), rel=1e-6)


def test_layer_loss_targets_the_overlap_weighted_teacher_states() -> None:
    teacher_states = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # (B=1, layers=1, T=2, D=2)
    weights = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])  # token 0 averages both wordpieces, token 1 has none
    states = torch.tensor([[[[0.5, 0.5], [9.0, 9.0]]]])  # (B, layers, N=2, D)
    keep = torch.tensor([[True, True]])
    assert layer_loss(states, keep, weights, teacher_states).item() == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def teacher():  # noqa: ANN201
    from vc2l_retriever.training.teacher_body import TextTeacher

    return TextTeacher()


def test_the_copied_body_fed_the_teachers_word_vectors_reproduces_every_hidden_state(teacher) -> None:  # noqa: ANN001
    from vc2l_retriever.training.teacher_body import copy_teacher_body

    reader = Reader(VC2LConfig.from_preset("reader-L6"))
    copy_teacher_body(reader.body, teacher.bert)
    out = teacher.run(["hello world, this is a test.", "short", "sphinx builds html from restructuredtext"])
    with torch.no_grad():
        states = reader.body(teacher.word_table[out.ids], out.keep, hidden_states=True)
    assert len(states) == 7
    for layer, state in enumerate(states):
        torch.testing.assert_close(state[out.keep], out.states[:, layer][out.keep], atol=2e-5, rtol=1e-5)


def test_reader_embeddings_do_not_depend_on_padding_or_batch_company(reader_model) -> None:  # noqa: ANN001
    short, long = "a short query", "a much longer passage that wraps onto several grid lines " * 3
    alone = reader_model.encode([short])
    together = reader_model.encode([short, long], batch_size=2)
    np.testing.assert_allclose(alone[0], together[0], atol=1e-5)


def test_reader_reads_the_content_end_from_the_pixels(reader_model) -> None:  # noqa: ANN001
    module = reader_model.vc2l
    features = module.preprocess(["abcde", "x" * 30])
    cells = module.model.content_cells(features["pixel_values"])
    assert cells.tolist() == [5, 30]


def test_reader_tokens_of_six_cells_run_across_the_line_end_in_reading_order() -> None:
    config = VC2LConfig.from_preset("reader-micro", patch_width=48)  # 6 cells a token; 28 cells a line
    reader = vc2l_retriever.create(config, seed=0, device="cpu")
    pixels = reader.vc2l.preprocess(["x" * 40])["pixel_values"]  # one full line and 12 cells of the next
    with torch.inference_mode():
        cells, tokens, counts = reader.vc2l.model.tokens(pixels)
    assert counts.tolist() == [7]  # 40 cells: six tokens of 6 and a last one of 4
    np.testing.assert_allclose(tokens[0, 4].numpy(), cells[0, 24:30].mean(0).numpy(), atol=1e-6)  # 24-27 + 28-29
    np.testing.assert_allclose(tokens[0, 6].numpy(), cells[0, 36:40].mean(0).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        VC2LConfig(patch_width=48)  # the ViT's patches tile the canvas in 2-D: 224 px is not a multiple of 48


def test_the_reader_network_saves_and_loads_through_load(tmp_path, reader_model) -> None:  # noqa: ANN001
    reader_model.save(str(tmp_path / "reader"))
    loaded = vc2l_retriever.load(tmp_path / "reader")
    assert loaded.vc2l.config.arch == "reader" and loaded.vc2l.config.render.layout == "grid"
    np.testing.assert_array_equal(loaded.encode(["grid text", "more"]), reader_model.encode(["grid text", "more"]))
