"""The paper's checkpoint format: strict, checked loading, conversion, and parity with a peer implementation."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import vc2l_retriever
from vc2l_retriever.cli import main as cli_main
from vc2l_retriever.hub import CheckpointMismatchError, load_vision_state, read_paper_state_dict
from vc2l_retriever.model import VC2LConfig, VisionTransformer

TINY = VC2LConfig(width=32, layers=2, heads=2, embed_dim=16)  # official 448x448 canvas, tiny tower


def paper_layout_state_dict(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """What an OpenCLIP/CLIPPO DDP checkpoint looks like: module.visual.* plus keys outside the vision tower."""
    state = {f"module.visual.{k}": v.clone() for k, v in model.state_dict().items()}
    state["module.logit_scale"] = torch.tensor(4.6)
    state["module.transformer.resblocks.0.ln_1.weight"] = torch.ones(8)  # a text tower, ignored by name
    return state


def test_paper_layout_checkpoint_loads_and_embeds_identically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = VisionTransformer(TINY).eval()
    path = tmp_path / "paper.pt"
    torch.save({"state_dict": paper_layout_state_dict(source), "epoch": 3}, path)
    target = VisionTransformer(TINY).eval()
    load_vision_state(target, read_paper_state_dict(path))
    x = torch.randn(2, 3, 448, 448)
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_wrong_shape_and_stray_key_fail_naming_the_keys(tmp_path: Path) -> None:
    model = VisionTransformer(TINY)
    state = {k.removeprefix("module.visual."): v for k, v in paper_layout_state_dict(model).items()
             if k.startswith("module.visual.")}
    bad_shape = dict(state, proj=torch.zeros(32, 99))
    with pytest.raises(CheckpointMismatchError, match=r"mis-shaped: \['proj: checkpoint \(32, 99\)"):
        load_vision_state(model, bad_shape)
    stray = dict(state, **{"transformer.resblocks.9.ln_1.weight": torch.ones(32)})
    with pytest.raises(CheckpointMismatchError, match=r"unexpected: \['transformer.resblocks.9.ln_1.weight'\]"):
        load_vision_state(model, stray)
    missing = {k: v for k, v in state.items() if k != "ln_post.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"missing: \['ln_post.bias'\]"):
        load_vision_state(model, missing)


def test_a_malicious_pickle_is_refused(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"visual.proj": Exploit()}}, f)
    with pytest.raises(pickle.UnpicklingError):
        read_paper_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_convert_checkpoint_cli_writes_a_loadable_model(tmp_path: Path) -> None:
    torch.manual_seed(1)
    full = VC2LConfig.from_preset("B/16-448")
    source = VisionTransformer(full).eval()
    path = tmp_path / "vc2l_b16.pt"
    torch.save(paper_layout_state_dict(source), path)
    out = tmp_path / "converted"
    assert cli_main(["convert-checkpoint", str(path), str(out), "--max-chars", "1100"]) == 0
    model = vc2l_retriever.load(out)
    assert model.vc2l.config.render.max_chars == 1100
    pixels = model.vc2l.preprocess(["hello world"])["pixel_values"]
    with torch.no_grad():
        np.testing.assert_allclose(model.encode(["hello world"]), source(pixels).numpy(), atol=1e-5)


def test_convert_checkpoint_cli_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["convert-checkpoint", str(tmp_path / "nope.pt"), str(tmp_path / "out")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err


def clip_to_open_clip(hf_state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """transformers' CLIP vision tower -> OpenCLIP names (the conversion a user of HF weights would do)."""
    p = "vision_model."
    out = {
        "conv1.weight": hf_state[p + "embeddings.patch_embedding.weight"],
        "class_embedding": hf_state[p + "embeddings.class_embedding"],
        "positional_embedding": hf_state[p + "embeddings.position_embedding.weight"],
        "ln_pre.weight": hf_state[p + "pre_layrnorm.weight"], "ln_pre.bias": hf_state[p + "pre_layrnorm.bias"],
        "ln_post.weight": hf_state[p + "post_layernorm.weight"],
        "ln_post.bias": hf_state[p + "post_layernorm.bias"],
        "proj": hf_state["visual_projection.weight"].T,
    }
    for i in range(layers):
        src, dst = f"{p}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        qkv = ("q_proj", "k_proj", "v_proj")
        out[dst + "attn.in_proj_weight"] = torch.cat([hf_state[f"{src}self_attn.{n}.weight"] for n in qkv])
        out[dst + "attn.in_proj_bias"] = torch.cat([hf_state[f"{src}self_attn.{n}.bias"] for n in qkv])
        for ours, theirs in [("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                             ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]:
            out[f"{dst}{ours}.weight"] = hf_state[f"{src}{theirs}.weight"]
            out[f"{dst}{ours}.bias"] = hf_state[f"{src}{theirs}.bias"]
    return out


def test_matches_transformers_clip_vision_tower_within_1e_5() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPVisionConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4, image_size=448,
        patch_size=16, projection_dim=24, hidden_act="gelu", layer_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    peer = transformers.CLIPVisionModelWithProjection(config).eval()
    ours = VisionTransformer(VC2LConfig(width=64, layers=3, heads=4, embed_dim=24, normalize=False)).eval()
    load_vision_state(ours, clip_to_open_clip(peer.state_dict(), layers=3))
    pixels = torch.randn(3, 3, 448, 448)
    with torch.no_grad():
        expected = peer(pixel_values=pixels).image_embeds
        torch.testing.assert_close(ours(pixels), expected, rtol=0, atol=1e-5)
