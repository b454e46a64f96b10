"""LLaDA and Dream as transformers citizens: Auto classes registered locally, save_pretrained → from_pretrained round
trips, the native reader and transformers reading each other's directories, gradient checkpointing, device_map and
dtype handling — all on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import infer_auto_device_map
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from latent_darm.models.dream.modeling import DreamModel
from latent_darm.models.dream.register import register as register_dream
from latent_darm.models.llada.checkpoint import load_llada
from latent_darm.models.llada.hf import LLaDAForMaskedLM
from latent_darm.models.llada.hf import register as register_llada


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_llada()
    register_dream()


def _ids() -> torch.Tensor:
    return torch.randint(0, 300, (2, 11), generator=torch.Generator().manual_seed(0))


def test_llada_wrapper_is_the_native_model(llada_model):
    wrapped = LLaDAForMaskedLM.from_native(llada_model)
    assert [n for n, _ in wrapped.named_parameters()] == [n for n, _ in llada_model.named_parameters()]
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[0, :3] = 0
    assert torch.equal(wrapped(_ids(), mask).logits, llada_model(_ids(), mask).logits)


def test_llada_save_pretrained_round_trip_and_the_native_reader(llada_model, llada_dir, tmp_path):
    LLaDAForMaskedLM.from_native(llada_model).save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert config["model_type"] == "llada" and config["architectures"] == ["LLaDAModelLM"]
    expected = llada_model(_ids()).logits
    back = AutoModel.from_pretrained(tmp_path / "hf")
    assert isinstance(back, LLaDAForMaskedLM) and torch.equal(back(_ids()).logits, expected)
    assert torch.equal(load_llada(tmp_path / "hf")(_ids()).logits, expected)  # strict native reader accepts it
    native_dir = AutoModelForMaskedLM.from_pretrained(llada_dir)  # and transformers reads the published layout
    assert torch.equal(native_dir(_ids()).logits, expected)
    assert isinstance(AutoConfig.from_pretrained(llada_dir).llada().d_model, int)


def test_llada_dtype_and_device_map(llada_model, llada_dir):
    half = AutoModel.from_pretrained(llada_dir, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    mapped = AutoModel.from_pretrained(llada_dir, device_map="auto")
    assert torch.equal(mapped(_ids()).logits, llada_model(_ids()).logits)
    # What device_map="auto" does on two small GPUs: whole blocks per device, never a block split across two.
    size = sum(p.numel() * p.element_size() for p in mapped.parameters())
    plan = infer_auto_device_map(
        mapped, max_memory={0: size // 2, 1: size // 2, "cpu": size}, no_split_module_classes=mapped._no_split_modules
    )
    assert len(set(plan.values())) > 1
    assert all(name.count(".") <= 3 and not name.split(".")[-1].endswith("proj") for name in plan), plan


def _grads(model, checkpointing: bool) -> dict[str, torch.Tensor]:
    model.zero_grad()
    # transformers renamed gradient_checkpointing_* to activation_checkpointing_* in 5.23; the old name still works.
    prefix = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
    getattr(model, f"{prefix}_checkpointing_{'enable' if checkpointing else 'disable'}")()
    model.train()
    logits = model(_ids()).logits
    logits.float().logsumexp(-1).mean().backward()
    model.eval()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_gradient_checkpointing_gives_the_same_gradients(family, llada_dir, dream_dir):
    model = AutoModel.from_pretrained(llada_dir if family == "llada" else dream_dir)
    assert model.supports_gradient_checkpointing
    calls = []
    # A module inside the block: its hook also fires when backward recomputes the block.
    inner = model.model.transformer.blocks[0].q_proj if family == "llada" else model.model.layers[0].self_attn.q_proj
    hook = inner.register_forward_hook(lambda *_: calls.append(1))
    plain = _grads(model, checkpointing=False)
    assert len(calls) == 1
    checkpointed = _grads(model, checkpointing=True)
    assert len(calls) == 3  # the forward pass, then the recompute in backward
    hook.remove()
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_dream_round_trip_and_official_layout_without_remote_code(dream_model, dream_dir, tmp_path):
    """The official config.json names remote code in ``auto_map``; the Auto classes use ours without it."""
    assert "auto_map" in json.loads((dream_dir / "config.json").read_text())
    official = AutoModel.from_pretrained(dream_dir)
    assert (
        type(official) is DreamModel and official.dtype == torch.bfloat16
    )  # config's torch_dtype, as transformers does
    official = AutoModel.from_pretrained(dream_dir, dtype=torch.float32)
    expected = dream_model(_ids()).logits
    assert torch.equal(official(_ids()).logits, expected)
    official.save_pretrained(tmp_path / "saved")
    back = AutoModelForMaskedLM.from_pretrained(tmp_path / "saved", dtype=torch.bfloat16)
    assert type(back) is DreamModel and {p.dtype for p in back.parameters()} == {torch.bfloat16}
    assert torch.equal(AutoModel.from_pretrained(tmp_path / "saved")(_ids()).logits, expected)
