"""``--init lstsq``: the ridge map recovers an exact linear relation, seeds each architecture to compute it, and
refuses a system too small or singular to determine it."""

from __future__ import annotations

import pytest
import torch

from latent_darm.errors import ConfigError
from latent_darm.projector.model import Projector, ProjectorConfig
from latent_darm.training.projector_lstsq import (
    RidgeSums,
    lstsq_projector,
    plan_token_embeddings,
    ridge_map,
    ridge_map_from_cache,
)

D_EXEC, D_PLAN, VOCAB = 12, 20, 50


def synthetic(n: int, length: int = 6, rows_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(table [V, d_e], token embeddings [n, L, d_e], latents [n, L, d_p] = [embeddings, noise] @ M + c): an
    invertible linear image of the embeddings beside d_p − d_e dimensions of noise, so the latents have full rank
    and the embeddings are an exact linear function of them. The table, M and c are fixed; ``rows_seed`` draws
    other tokens and noise."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(VOCAB, D_EXEC, generator=g)
    mixing, offset = torch.randn(D_PLAN, D_PLAN, generator=g), torch.randn(D_PLAN, generator=g)
    rows = torch.Generator().manual_seed(rows_seed)
    ids = torch.randint(VOCAB, (n, length), generator=rows)
    embeddings = table[ids]
    noise = torch.randn(n, length, D_PLAN - D_EXEC, generator=rows)
    return table, embeddings, torch.cat([embeddings, noise], -1) @ mixing + offset


def test_the_map_recovers_embeddings_from_their_linear_image():
    _, embeddings, latents = synthetic(20)
    lmap = ridge_map(latents, embeddings, ridge=0.0)
    assert torch.allclose(lmap(latents).float(), embeddings, atol=1e-4)
    _, held_embeddings, held_latents = synthetic(5, rows_seed=1)  # held-out tokens through the same map
    assert torch.allclose(lmap(held_latents).float(), held_embeddings, atol=1e-4)
    small = ridge_map(latents, embeddings, ridge=1e-3)  # a small ridge barely moves an exact fit
    assert torch.allclose(small(latents).float(), embeddings, atol=1e-2)


@pytest.mark.parametrize("architecture", ["linear", "mlp2_gelu_rmsnorm"])
def test_seeded_projectors_compute_the_map(architecture):
    _, embeddings, latents = synthetic(20)
    hidden = {"hidden_dim": 2 * D_EXEC} if architecture == "mlp2_gelu_rmsnorm" else {}
    config = ProjectorConfig(D_PLAN, D_EXEC, architecture=architecture, **hidden)
    torch.manual_seed(0)
    projector = Projector(config)
    before = projector(latents).detach()
    lstsq_projector(projector, latents, embeddings, ridge=0.0)
    with torch.no_grad():
        out = projector(latents)
    if architecture == "mlp2_gelu_rmsnorm":  # the output norm keeps the direction, sets the length
        cosine = torch.nn.functional.cosine_similarity(out, embeddings, dim=-1)
        assert cosine.min() > 0.999 and torch.nn.functional.cosine_similarity(before, embeddings, dim=-1).mean() < 0.5
        rms = out.pow(2).mean(-1).sqrt()
        assert torch.allclose(rms, torch.full_like(rms, config.norm_init), atol=1e-3)
    else:
        assert torch.allclose(out, embeddings, atol=1e-3)
        assert not torch.allclose(before, embeddings, atol=0.5)


def test_a_narrow_mlp_gets_the_best_low_rank_map():
    """mlp2x_gelu's hidden width is d_executor = 12: 6 unit pairs carry the best rank-6 part of the rank-12 map —
    worse than exact, far better than the random init."""
    _, embeddings, latents = synthetic(20)
    torch.manual_seed(0)
    projector = Projector(ProjectorConfig(D_PLAN, D_EXEC, architecture="mlp2x_gelu"))
    random_error = (projector(latents).detach() - embeddings).pow(2).mean()
    lmap = lstsq_projector(projector, latents, embeddings, ridge=0.0)
    with torch.no_grad():
        low_rank = projector(latents)
    u, s, vh = torch.linalg.svd(lmap.weight, full_matrices=False)
    best = (latents.double() - lmap.x_mean) @ (u[:, :6] * s[:6]) @ vh[:6] + lmap.y_mean
    assert torch.allclose(low_rank.double(), best, atol=1e-3)
    assert (low_rank - embeddings).pow(2).mean() < random_error / 2


def test_too_few_rows_or_a_singular_system_is_refused_naming_the_option():
    _, embeddings, latents = synthetic(2, length=5)  # 10 rows < 21 needed for 20 dims with ridge 0
    with pytest.raises(ConfigError, match=r"--init lstsq: 10 plan positions are too few .* at least 21"):
        ridge_map(latents, embeddings, ridge=0.0)
    ridge_map(latents, embeddings, ridge=0.1)  # a ridge makes it determined
    _, embeddings, latents = synthetic(20)
    flat = latents.clone()
    flat[..., 0] = 3.0  # a constant latent dimension: rank-deficient once centred
    with pytest.raises(ConfigError, match=r"--init lstsq: the centred planner latents have rank 19 < 20"):
        ridge_map(flat, embeddings, ridge=0.0)
    with pytest.raises(ConfigError, match="--init lstsq seeds linear, mlp2_gelu_rmsnorm, mlp2x_gelu"):
        lstsq_projector(Projector(ProjectorConfig(D_PLAN, D_EXEC, architecture="mlp3_gelu_rmsnorm")), latents,
                        embeddings, 0.1)  # fmt: skip


def test_plan_token_targets_are_the_executors_embeddings(executor):
    ids = [[5, 9, 9], [7, 1, 2]]
    expected = executor.input_embeddings.weight.detach()[torch.tensor(ids)]
    assert torch.equal(plan_token_embeddings(executor, ids), expected)
    assert torch.equal(plan_token_embeddings(executor, ids, executor.tokenizer), expected)  # same tokenizer


@pytest.fixture(scope="module")
def executor(tmp_path_factory, tokenizer):
    from latent_darm.models.autoregressive_lm import AutoregressiveLM
    from latent_darm.models.tiny import random_llama

    return AutoregressiveLM(random_llama(tokenizer, seed=0), tokenizer, name_or_path="tiny")


def test_the_cache_keeps_plan_tokens_and_names_the_option_when_an_old_cache_lacks_them(tmp_path):
    from latent_darm.errors import DataError
    from latent_darm.training.latent_cache import LatentCache

    cache = LatentCache.open(tmp_path / "c", {"synthetic": True})
    cache.add({"a": torch.zeros(3, 4)}, {"a": "plan a"}, tokens={"a": [70000, 2, 3]})  # ids beyond fp16's exact range
    cache.add({"b": torch.zeros(3, 4)}, {"b": "plan b"})  # as a cache built before tokens were stored
    reopened = LatentCache.open(tmp_path / "c")
    assert reopened.plan_tokens(["a"]) == [[70000, 2, 3]] and len(reopened) == 2
    with pytest.raises(DataError, match="no plan token ids for example 'b' .* --init lstsq needs them"):
        reopened.plan_tokens(["a", "b"])


def closed_form(latents: torch.Tensor, targets: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The map's definition on all rows at once in float64 (weight, bias): the reference the running sums meet."""
    x = latents.reshape(-1, latents.shape[-1]).double()
    y = targets.reshape(-1, targets.shape[-1]).double()
    xc, yc = x - x.mean(0), y - y.mean(0)
    weight = torch.linalg.solve(xc.T @ xc + ridge * torch.eye(x.shape[1], dtype=x.dtype), xc.T @ yc)
    return weight, y.mean(0) - x.mean(0) @ weight


@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_running_sums_over_batches_give_the_closed_form(ridge):
    """Latents far from 0 (as real planners' are) summed in uneven batches: the same map as on all rows at once."""
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(9, 7, D_PLAN, generator=g) * 4 + 300 * torch.randn(D_PLAN, generator=g)
    targets = torch.randn(9, 7, D_EXEC, generator=g) + 50
    weight, bias = closed_form(latents, targets, ridge)
    sums = RidgeSums()
    for start, stop in [(0, 1), (1, 5), (5, 5), (5, 9)]:
        sums.add(latents[start:stop], targets[start:stop])
    lmap = sums.solve(ridge)
    assert torch.allclose(lmap.weight, weight, rtol=1e-6, atol=1e-9)
    assert torch.allclose(lmap.bias, bias, rtol=1e-6, atol=1e-6)
    assert torch.allclose(ridge_map(latents, targets, ridge).weight, weight, rtol=1e-6, atol=1e-9)


def test_the_map_from_a_cache_reads_it_a_batch_at_a_time(tmp_path, executor):
    """``--init lstsq`` on a latent cache: the closed form on all cached rows, yet no read asks for more than one
    batch of examples (the whole training set is never in memory at once)."""
    from latent_darm.training.latent_cache import LatentCache

    g = torch.Generator().manual_seed(4)
    width, vocab = executor.input_embeddings.weight.shape[1], executor.input_embeddings.weight.shape[0]
    cache = LatentCache.open(tmp_path / "c", {"synthetic": True})
    keys = [f"ex{i}" for i in range(11)]
    for shard in (keys[:6], keys[6:]):
        latents = {k: (torch.randn(5, 8, generator=g) + 20).half() for k in shard}
        tokens = {k: torch.randint(vocab, (5,), generator=g).tolist() for k in shard}
        cache.add(latents, {k: "plan" for k in shard}, tokens=tokens)
    reads: list[int] = []
    load = cache.load
    cache.load = lambda some: reads.append(len(some)) or load(some)  # type: ignore[method-assign]
    lmap = ridge_map_from_cache(executor, cache, keys, 1e-3, batch_size=4)
    assert reads == [4, 4, 3]
    weight, bias = closed_form(load(keys).float(), plan_token_embeddings(executor, cache.plan_tokens(keys)), 1e-3)
    assert lmap.weight.shape == (8, width)
    assert torch.allclose(lmap.weight, weight, rtol=1e-6, atol=1e-9) and torch.allclose(lmap.bias, bias, atol=1e-6)
