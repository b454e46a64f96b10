"""The projector: architectures and sizes, init, save/load round trips, and refusing a pair it was not trained for."""

from __future__ import annotations

import json

import pytest
import torch

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.tiny import train_bpe_tokenizer
from latent_darm.projector.model import (
    ARCHITECTURES,
    ModelSignature,
    Projector,
    ProjectorConfig,
    RMSNorm,
    embedding_rms,
)
from tests.models.test_executor import varied_llama


@pytest.fixture(scope="module")
def executor(tokenizer) -> AutoregressiveLM:
    return AutoregressiveLM(varied_llama(tokenizer), tokenizer, name_or_path="tiny-llama")


@pytest.fixture(scope="module")
def planner(llada_dir) -> DiffusionLM:
    return DiffusionLM.from_pretrained(llada_dir)


def latents(batch: int = 2, length: int = 5, dim: int = 64) -> torch.Tensor:
    return torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("architecture", "expected"),
    [
        ("mlp2_gelu_rmsnorm", 4096 * 1024 + 1024 + 1024 * 3072 + 3072 + 3072),
        ("mlp3_gelu_rmsnorm", 4096 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 3072 + 3072 + 3072),
        ("linear", 4096 * 3072 + 3072),
        ("mlp2x_gelu", 4096 * 3072 + 3072 + 3072 * 3072 + 3072),
    ],
)
def test_paper_sizes_without_allocating(architecture, expected):
    with torch.device("meta"):
        projector = Projector(ProjectorConfig(4096, 3072, architecture=architecture))
    assert all(p.is_meta for p in projector.parameters())
    assert projector.count_parameters() == expected
    if architecture == "mlp2_gelu_rmsnorm":
        assert round(expected / 1e6, 1) == 7.3  # the paper's ~7.3M for LLaDA-8B → Llama-3.2-3B


def test_default_is_the_papers_stack_with_xavier_init():
    projector = Projector(ProjectorConfig(64, 48))
    first, gelu, second, norm = projector.layers
    assert (first.in_features, first.out_features, second.out_features) == (64, 1024, 48)
    assert gelu.approximate == "tanh" and isinstance(norm, RMSNorm)
    bound = (6 / (64 + 1024)) ** 0.5
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > 0.9 * bound
    assert not first.bias.any() and not second.bias.any()
    assert torch.equal(norm.weight, torch.ones(48))
    out = projector(latents())
    assert out.shape == (2, 5, 48)
    torch.testing.assert_close(out.pow(2).mean(-1).sqrt(), torch.ones(2, 5), atol=1e-3, rtol=0)


def test_for_pair_starts_at_the_executors_embedding_scale(planner, executor):
    projector = Projector.for_pair(planner, executor)
    config = projector.config
    assert (config.planner_dim, config.executor_dim) == (64, 48)
    assert config.executor == "tiny-llama" and config.planner == planner.name_or_path
    assert config.executor_tokenizer_fingerprint == executor.tokenizer_fingerprint()
    assert config.planner_tokenizer_fingerprint  # from the planner's tokenizer
    scale = embedding_rms(executor.input_embeddings.weight)
    assert config.norm_init == pytest.approx(scale) and 0.15 < scale < 0.25  # varied_llama's std is 0.2
    rms = projector(latents()).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, scale), atol=1e-3, rtol=0)


@pytest.mark.parametrize("architecture", [*ARCHITECTURES, "identity"])
def test_save_and_load_round_trip(tmp_path, architecture):
    dims = (48, 48) if architecture == "identity" else (64, 48)
    config = ProjectorConfig(*dims, architecture=architecture, hidden_dim=32, training={"lr": 3e-4, "steps": 10})
    projector = Projector(config)
    with torch.no_grad():
        for param in projector.parameters():
            param.add_(0.01 * torch.randn(param.shape))  # not just the init
    projector.save_pretrained(tmp_path / "p")
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["config.json", "model.safetensors"]
    loaded = Projector.from_pretrained(tmp_path / "p")
    assert loaded.config == config and loaded.name_or_path == str(tmp_path / "p")
    x = latents(dim=dims[0])
    assert torch.equal(loaded(x), projector(x))
    assert loaded.describe()["architecture"] == architecture and "training" not in loaded.describe()


def test_project_casts_cached_fp16_latents_and_returns_the_executors_dtype():
    projector = Projector(ProjectorConfig(64, 48))
    half = latents().half()
    out = projector.project(half, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 5, 48)
    torch.testing.assert_close(out.float(), projector(half.float()), atol=2e-2, rtol=2e-2)


def test_dimension_errors_name_both_dims(tmp_path):
    with pytest.raises(ConfigError, match="64 and 48"):
        Projector(ProjectorConfig(64, 48, architecture="identity"))
    with pytest.raises(ConfigError, match="architecture must be one of"):
        ProjectorConfig(64, 48, architecture="transformer")
    projector = Projector(ProjectorConfig(64, 48))
    with pytest.raises(ConfigError, match="dim 32 .* planner_dim 64"):
        projector(torch.zeros(1, 2, 32))
    projector.save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p/config.json").read_text())
    (tmp_path / "p/config.json").write_text(json.dumps({**config, "planner_dim": 32}))
    with pytest.raises(CheckpointError, match=r"shape \(1024, 64\).*planner_dim 32"):
        Projector.from_pretrained(tmp_path / "p")


def test_refuses_a_pair_it_was_not_trained_for(tmp_path, planner, executor):
    Projector.for_pair(planner, executor).save_pretrained(tmp_path / "p")
    assert Projector.from_pretrained(tmp_path / "p", planner=planner, executor=executor).config.executor_dim == 48
    other = train_bpe_tokenizer(["a completely different corpus of words"] * 10, vocab_size=300)
    stranger = AutoregressiveLM(varied_llama(other), other)
    with pytest.raises(CheckpointError, match="another executor tokenizer") as info:
        Projector.from_pretrained(tmp_path / "p", planner=planner, executor=stranger)
    assert "\n" not in str(info.value) and "--force-projector (darm eval / solve)" in str(info.value)
    assert Projector.from_pretrained(tmp_path / "p", planner=planner, executor=stranger, force=True)
    wrong_planner = ModelSignature(hidden_size=4096, fingerprint=None, name="llada-8b")
    with pytest.raises(CheckpointError, match="planner hidden size 64, but planner 'llada-8b' has 4096"):
        Projector.from_pretrained(tmp_path / "p", planner=wrong_planner, force=True)  # cannot run: never forced


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: (d / "model.safetensors").unlink(), "missing model.safetensors"),
        (lambda d: (d / "config.json").write_text("{oops"), "not valid JSON"),
        (lambda d: (d / "config.json").write_text('{"planner_dim": 64, "executor_dim": 48, "x": 1}'), "unknown"),
        (lambda d: (d / "config.json").write_text('{"executor_dim": 48}'), "missing projector field 'planner_dim'"),
        (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "unreadable safetensors"),
        (
            lambda d: (d / "config.json").write_text(
                '{"planner_dim": 64, "executor_dim": 48, "architecture": "linear"}'
            ),
            "unexpected tensor",
        ),
    ],
)
def test_bad_checkpoints(tmp_path, damage, match):
    Projector(ProjectorConfig(64, 48)).save_pretrained(tmp_path / "p")
    damage(tmp_path / "p")
    with pytest.raises(CheckpointError, match=match):
        Projector.from_pretrained(tmp_path / "p")


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Projector.from_pretrained(tmp_path / "nowhere")
