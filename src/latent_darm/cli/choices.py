"""The fixed choices of ``darm`` options, as enums so ``--help`` lists them and shells complete them.

Kept free of torch: the values mirror the sampler's and the pipeline factory's names (a test checks they agree).
"""

from __future__ import annotations

from enum import StrEnum

from latent_darm.dtypes import AUTO, DTYPE_NAMES


class PipelineKind(StrEnum):
    arm = "arm"
    ddlm = "ddlm"
    text = "text"
    latent = "latent"


class Remasking(StrEnum):
    """Every planner family's rules; each family accepts its own (LLaDA the first two, Dream the next four,
    DiffusionGemma the last) and names them in a one-line error otherwise."""

    low_confidence = "low_confidence"
    random = "random"
    maskgit_plus = "maskgit_plus"
    topk_margin = "topk_margin"
    entropy = "entropy"
    origin = "origin"
    entropy_bound = "entropy_bound"


class ChatTemplate(StrEnum):
    """The autoregressive executor's chat template: use it (auto: plain prompts, with a notice, when there is
    none), require it, or send plain prompts."""

    auto = "auto"
    required = "required"
    none = "none"


class Cache(StrEnum):
    none = "none"
    prefix = "prefix"
    dual = "dual"


# ``auto`` (float32 on CPU, bfloat16 on a GPU) is every command's default; the short aliases stay accepted.
Dtype = StrEnum("Dtype", [(name, name) for name in (AUTO, *DTYPE_NAMES)])


class TrainDevice(StrEnum):
    """``darm train-projector`` runs on the process's accelerator (one per process under accelerate)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# Devices that take an index as well (cuda:N) cannot be an enum; they complete from this list.
DEVICE_HELP = "auto | cpu | cuda | cuda:N (auto: CUDA when present)."


def complete_device(incomplete: str) -> list[str]:
    return [d for d in ("auto", "cpu", "cuda", "cuda:0", "cuda:1") if d.startswith(incomplete)]


def complete_benchmark(incomplete: str) -> list[str]:
    from latent_darm.evaluation.benchmarks import benchmark_names

    return [name for name in benchmark_names() if name.startswith(incomplete)]
