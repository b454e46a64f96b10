"""The native LLaDA loader opens checkpoints in the published layout and refuses broken ones by name."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from latent_darm.errors import CheckpointError
from latent_darm.models.llada.checkpoint import load_llada
from latent_darm.models.llada.configuration import LLaDAConfig
from latent_darm.models.llada.modeling import LLaDAModelLM

# config.json of GSAI-ML/LLaDA-8B-Instruct as published (../shared/docs/references.md).
PUBLISHED_8B_CONFIG = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModel": "modeling_llada.LLaDAModelLM",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 4096,
    "embedding_dropout": 0.0,
    "embedding_size": 126464,
    "eos_token_id": 126081,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 126336,
    "max_sequence_length": 4096,
    "mlp_hidden_size": 12288,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "pad_token_id": 126081,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 126464,
    "weight_tying": False,
}


def test_published_8b_config_gives_the_published_parameter_names_and_shapes():
    config = LLaDAConfig.from_dict(PUBLISHED_8B_CONFIG)
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    shapes = {name: list(p.shape) for name, p in model.state_dict().items()}
    assert shapes["model.transformer.wte.weight"] == [126464, 4096]
    assert shapes["model.transformer.ff_out.weight"] == [126464, 4096]
    assert shapes["model.transformer.ln_f.weight"] == [4096]
    for i in (0, 31):
        block = f"model.transformer.blocks.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "attn_out"):
            assert shapes[block + name + ".weight"] == [4096, 4096]
        assert shapes[block + "ff_proj.weight"] == [12288, 4096]
        assert shapes[block + "up_proj.weight"] == [12288, 4096]
        assert shapes[block + "ff_out.weight"] == [4096, 12288]
        assert shapes[block + "attn_norm.weight"] == shapes[block + "ff_norm.weight"] == [4096]
    assert len(shapes) == 3 + 32 * 9
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(8.02e9, rel=0.01)


def test_ids_come_from_the_config_and_ildada_mask_id_is_accepted():
    config = LLaDAConfig.from_dict({**PUBLISHED_8B_CONFIG, "mask_token_id": 5})
    assert (config.mask_token_id, config.eos_token_id) == (5, 126081)


@pytest.mark.parametrize("fixture", ["llada_dir", "sharded_llada_dir"])
def test_load_reproduces_the_saved_model(request, fixture, llada_model):
    directory = request.getfixturevalue(fixture)
    loaded = load_llada(directory)
    ids = torch.randint(0, llada_model.config.vocab_size, (2, 17))
    assert torch.equal(loaded(ids).logits, llada_model(ids).logits)


def test_sharded_checkpoint_really_is_sharded(sharded_llada_dir):
    index = json.loads((sharded_llada_dir / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1


def test_saved_config_uses_the_published_field_names(llada_dir):
    raw = json.loads((llada_dir / "config.json").read_text())
    for field in (
        "d_model",
        "n_heads",
        "n_kv_heads",
        "n_layers",
        "mlp_hidden_size",
        "vocab_size",
        "embedding_size",
        "rope_theta",
        "rms_norm_eps",
        "mask_token_id",
        "eos_token_id",
        "weight_tying",
    ):
        assert field in raw
    assert raw["model_type"] == "llada" and raw["block_type"] == "llama"


def test_bf16_load_stays_close_to_fp32(llada_dir, llada_model):
    loaded = load_llada(llada_dir, dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    ids = torch.randint(0, llada_model.config.vocab_size, (1, 12))
    expected = llada_model(ids).logits
    got = loaded(ids).logits.float()
    assert torch.allclose(got, expected, atol=0.15 * expected.abs().max().item())
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.8


@pytest.fixture
def broken_dir(tmp_path, llada_dir):
    directory = tmp_path / "broken"
    shutil.copytree(llada_dir, directory)
    return directory


def _edit_config(directory, **changes):
    path = directory / "config.json"
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"d_model": None}, "missing required field 'd_model'"),
        ({"flux_capacitor": 3}, "unknown config field 'flux_capacitor'"),
        ({"block_type": "sequential"}, "'block_type' = 'sequential' is not supported"),
        ({"model_type": "llama"}, "model_type is 'llama'"),
        ({"n_heads": 5}, "not divisible by n_heads"),
    ],
)
def test_bad_config_is_reported_by_field(broken_dir, changes, message):
    _edit_config(broken_dir, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_llada(broken_dir)


def test_missing_config_and_weights_are_named(broken_dir):
    (broken_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_llada(broken_dir)
    (broken_dir / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: file not found"):
        load_llada(broken_dir)


def test_mismatched_and_missing_tensors_are_named(broken_dir):
    path = broken_dir / "model.safetensors"
    # Copies: older safetensors map the file, and rewriting a mapped file under its tensors crashes (SIGBUS).
    state = {name: tensor.clone() for name, tensor in load_file(str(path)).items()}
    state["model.transformer.blocks.1.up_proj.weight"] = torch.zeros(3, 3)
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"'model.transformer.blocks.1.up_proj.weight' has shape \[3, 3\]"):
        load_llada(broken_dir)
    del state["model.transformer.blocks.1.up_proj.weight"]
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="'model.transformer.blocks.1.up_proj.weight' is missing"):
        load_llada(broken_dir)


def test_missing_shard_is_named(tmp_path, sharded_llada_dir):
    directory = tmp_path / "sharded"
    shutil.copytree(sharded_llada_dir, directory)
    next(directory.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="shard model-00002-of-.* is listed but missing"):
        load_llada(directory)


def test_pickle_only_checkpoint_is_refused(tmp_path, llada_dir):
    directory = tmp_path / "pickled"
    directory.mkdir()
    shutil.copy(llada_dir / "config.json", directory)
    (directory / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="only pickle weights"):
        load_llada(directory)
