"""The projector: planner latents [B, L, d_planner] → soft tokens [B, L, d_executor] in the executor's embedding space.

The paper's default is ``Linear(d_planner→1024) → GELU(tanh) → Linear(1024→d_executor) → RMSNorm(d_executor)``;
the output norm exists to put soft tokens on the scale of the executor's text embeddings. Xavier-uniform weights,
zero biases. The norm's scale starts at ``norm_init``: 1.0 (the authors' choice) for a bare config, and the
executor's median per-token embedding RMS when built with :meth:`Projector.for_pair`, so training starts with soft
tokens already at text-token scale (far below 1 for Llama-class models) instead of spending its first thousands of
steps shrinking them. The median ignores untrained reserved-token rows that would drag a mean down.

A checkpoint directory holds ``config.json`` and ``model.safetensors``. It records which planner and executor it
was trained for (hidden sizes and tokenizer fingerprints); loading it for another pair is refused. It also records
``planner_sampler``, the sampler settings its training latents were made with, which the latent pipeline uses by
default so the projector is fed latents from the same process it learned from.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.models.autoregressive_lm import tokenizer_fingerprint
from latent_darm.models.hub import resolve_checkpoint
from latent_darm.models.norm import RMSNorm
from latent_darm.models.splice import PLACEMENTS

logger = logging.getLogger(__name__)

ARCHITECTURES = ("mlp2_gelu_rmsnorm", "mlp3_gelu_rmsnorm", "linear", "mlp2x_gelu")
LATENT_ROWS = ("plan", "predictor")
DIAGNOSTIC_ARCHITECTURES = ("identity",)  # tests and exactness checks only: soft token = latent
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class ProjectorConfig:
    """Everything that defines a projector, plus the pair it was trained for and free-form training provenance.
    ``mlp2x_gelu`` is LLaVA's Linear(d_planner→d_executor)→GELU→Linear(d_executor→d_executor): no ``hidden_dim``.
    ``planner_sampler``: the planner's :class:`~latent_darm.sampling.SamplerConfig` fields during training (empty
    for projectors saved before it was recorded)."""

    planner_dim: int
    executor_dim: int
    architecture: str = "mlp2_gelu_rmsnorm"
    hidden_dim: int = 1024
    latent_layer: int = -1
    # Which planner rows are the plan's latents when its logits are shifted (Dream): "plan" = the rows at the plan
    # positions, "predictor" = the rows that predicted them (one to the left). Same rows for unshifted planners.
    latent_rows: str = "plan"
    plan_length: int = 64
    placement: str = "prefix"
    norm_init: float = 1.0
    norm_eps: float = 1e-6
    planner: str = ""
    executor: str = ""
    planner_tokenizer_fingerprint: str = ""
    executor_tokenizer_fingerprint: str = ""
    planner_sampler: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES + DIAGNOSTIC_ARCHITECTURES:
            raise ConfigError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        for name in ("planner_dim", "executor_dim", "hidden_dim", "plan_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"projector {name} must be a positive integer, got {value!r}")
        eps = self.norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
            # A negative epsilon makes the norm divide by sqrt(mean² - |eps|): NaN soft tokens for small latents.
            raise ConfigError(f"projector norm_eps must be a finite number > 0, got {eps!r}")
        if isinstance(self.latent_layer, bool) or not isinstance(self.latent_layer, int) or self.latent_layer < -1:
            raise ConfigError(
                f"projector latent_layer must be -1 (after the final norm) or >= 0, got {self.latent_layer!r}"
            )
        if self.latent_rows not in LATENT_ROWS:
            raise ConfigError(f"latent_rows must be one of {', '.join(LATENT_ROWS)}, got {self.latent_rows!r}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if not isinstance(self.planner_sampler, dict):
            raise ConfigError(
                f"projector planner_sampler must be a mapping of sampler settings, got {self.planner_sampler!r}"
            )
        if self.architecture == "identity" and self.planner_dim != self.executor_dim:
            raise ConfigError(
                f"the identity projector needs planner_dim == executor_dim, got {self.planner_dim} and "
                f"{self.executor_dim}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> ProjectorConfig:
        """From config.json values; unknown or missing fields are a :class:`CheckpointError` naming ``source``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CheckpointError(f"{source}: unknown projector field '{unknown[0]}'")
        missing = [k for k in ("planner_dim", "executor_dim") if k not in values]
        if missing:
            raise CheckpointError(f"{source}: missing projector field '{missing[0]}'")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise CheckpointError(f"{source}: {exc}") from None


def _output_norm(dim: int, eps: float) -> RMSNorm:
    """The executor-side RMSNorm, scaled in float32 as Llama's is."""
    return RMSNorm(dim, eps, scale_in_float32=True)


def build_layers(config: ProjectorConfig) -> nn.Sequential:
    """The layer stack of ``config.architecture``."""
    p, h, e = config.planner_dim, config.hidden_dim, config.executor_dim
    if config.architecture == "mlp2_gelu_rmsnorm":
        return nn.Sequential(nn.Linear(p, h), nn.GELU("tanh"), nn.Linear(h, e), _output_norm(e, config.norm_eps))
    if config.architecture == "mlp3_gelu_rmsnorm":
        return nn.Sequential(
            nn.Linear(p, h),
            nn.GELU("tanh"),
            nn.Linear(h, h),
            nn.GELU("tanh"),
            nn.Linear(h, e),
            _output_norm(e, config.norm_eps),
        )
    if config.architecture == "linear":
        return nn.Sequential(nn.Linear(p, e))
    if config.architecture == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(p, e), nn.GELU(), nn.Linear(e, e))
    return nn.Sequential(nn.Identity())


def embedding_rms(weight: torch.Tensor) -> float:
    """Median over tokens of each embedding row's RMS; weight [V, d]."""
    return float(weight.detach().float().pow(2).mean(-1).sqrt().median())


@dataclass(frozen=True)
class ModelSignature:
    """What a projector checks about one side of its pair: hidden size and tokenizer fingerprint (None: unknown)."""

    hidden_size: int
    fingerprint: str | None = None
    name: str = ""


class _PairModel(Protocol):
    hidden_size: int
    name_or_path: str


def signature_of(model: _PairModel | ModelSignature) -> ModelSignature:
    """The signature of a planner / executor object (anything with ``hidden_size`` and a ``tokenizer`` or a
    ``tokenizer_fingerprint()``), or ``model`` itself when it already is one."""
    if isinstance(model, ModelSignature):
        return model
    method, tokenizer = getattr(model, "tokenizer_fingerprint", None), getattr(model, "tokenizer", None)
    fingerprint = None
    if callable(method):
        fingerprint = method()
    elif tokenizer is not None:
        fingerprint = tokenizer_fingerprint(tokenizer)
    return ModelSignature(int(model.hidden_size), fingerprint, str(getattr(model, "name_or_path", "")))


class Projector(nn.Module):
    """Per-position map from planner latents to executor soft tokens."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = build_layers(config)
        self.name_or_path = ""
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases, the norm's scale at ``config.norm_init``."""
        for module in self.layers:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.constant_(module.weight, self.config.norm_init)

    @classmethod
    def for_pair(
        cls, planner: _PairModel, executor: _PairModel, architecture: str = "mlp2_gelu_rmsnorm", **config: Any
    ) -> Projector:
        """A fresh projector sized and labelled for this planner/executor pair, its output norm starting at the
        executor's embedding scale. ``executor`` needs ``input_embeddings`` (a :class:`AutoregressiveLM`)."""
        ends = signature_of(planner), signature_of(executor)
        defaults = dict(
            planner_dim=ends[0].hidden_size,
            executor_dim=ends[1].hidden_size,
            planner=ends[0].name,
            executor=ends[1].name,
            planner_tokenizer_fingerprint=ends[0].fingerprint or "",
            executor_tokenizer_fingerprint=ends[1].fingerprint or "",
            norm_init=embedding_rms(executor.input_embeddings.weight),  # type: ignore[attr-defined]
        )
        return cls(ProjectorConfig(architecture=architecture, **{**defaults, **config}))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, L, d_planner] (or [L, d_planner]) → [B, L, d_executor] (or [L, d_executor])."""
        if latents.shape[-1] != self.config.planner_dim:
            raise ConfigError(
                f"latents have dim {latents.shape[-1]} but the projector expects planner_dim {self.config.planner_dim}"
            )
        return self.layers(latents)

    def project(
        self, latents: torch.Tensor, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """forward() on latents stored in any dtype (fp16 caches), result moved to the executor's device/dtype."""
        reference = next(self.parameters(), None)
        if reference is not None:
            latents = latents.to(device=reference.device, dtype=reference.dtype)
        return self(latents).to(device=device, dtype=dtype)

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> dict[str, Any]:
        """JSON-able identity for results files: path, parameter count and the config minus training notes."""
        settings = {k: v for k, v in self.config.to_dict().items() if k != "training"}
        return {"path": self.name_or_path, "parameters": self.count_parameters(), **settings}

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, directory / WEIGHTS_FILE, metadata={"format": "pt"})
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return directory

    @staticmethod
    def stored_config(reference: str | Path) -> ProjectorConfig:
        """The config of a saved projector without loading its weights."""
        config_path = resolve_checkpoint(reference, "projector") / CONFIG_FILE
        if not config_path.is_file():
            raise CheckpointError(f"projector {reference}: missing {CONFIG_FILE}")
        try:
            values = json.loads(config_path.read_bytes().decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # malformed, not UTF-8, a huge number, nested too deeply
            reason = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            raise CheckpointError(f"{config_path}: not valid JSON ({reason})") from None
        if not isinstance(values, dict):
            raise CheckpointError(f"{config_path}: expected a JSON object")
        return ProjectorConfig.from_dict(values, source=str(config_path))

    @classmethod
    def from_pretrained(
        cls,
        reference: str | Path,
        *,
        planner: _PairModel | ModelSignature | None = None,
        executor: _PairModel | ModelSignature | None = None,
        force: bool = False,
    ) -> Projector:
        """Load a projector directory (or hub id). Given the planner and/or executor it will serve, refuse a pair
        it was not trained for: a hidden-size mismatch always (it cannot run), a tokenizer mismatch unless
        ``force``."""
        directory = resolve_checkpoint(reference, "projector")
        weights_path = directory / WEIGHTS_FILE
        projector = cls(cls.stored_config(directory))
        if not weights_path.is_file():
            raise CheckpointError(f"projector {directory}: missing {WEIGHTS_FILE}")
        try:
            state = load_file(weights_path)
        except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
            raise CheckpointError(f"{weights_path}: unreadable safetensors file ({exc})") from None
        expected = projector.state_dict()
        for which, keys in (("missing", set(expected) - set(state)), ("unexpected", set(state) - set(expected))):
            if keys:
                raise CheckpointError(
                    f"{weights_path}: {which} tensor '{min(keys)}' for architecture {projector.config.architecture!r}"
                )
        for key, tensor in expected.items():
            if state[key].shape != tensor.shape:
                raise CheckpointError(
                    f"{weights_path}: tensor '{key}' has shape {tuple(state[key].shape)} but config.json (planner_dim "
                    f"{projector.config.planner_dim}, executor_dim {projector.config.executor_dim}) implies "
                    f"{tuple(tensor.shape)}"
                )
        projector.load_state_dict(state)
        projector.name_or_path = str(reference)
        projector.check_pair(planner, executor, force=force)
        return projector.eval()

    def check_pair(
        self,
        planner: _PairModel | ModelSignature | None = None,
        executor: _PairModel | ModelSignature | None = None,
        *,
        force: bool = False,
    ) -> None:
        """Raise :class:`CheckpointError` when this projector was not trained for ``planner`` / ``executor``."""
        label = self.name_or_path or "projector"
        sides = (
            ("planner", planner, self.config.planner_dim, self.config.planner_tokenizer_fingerprint),
            ("executor", executor, self.config.executor_dim, self.config.executor_tokenizer_fingerprint),
        )
        layers = getattr(planner, "num_layers", None)
        if isinstance(layers, int) and self.config.latent_layer > layers:
            raise CheckpointError(
                f"projector {label} reads planner layer {self.config.latent_layer} (latent_layer), but planner "
                f"{getattr(planner, 'name_or_path', '')!r} has {layers} layers (0..{layers}, or -1)"
            )
        for role, model, dim, trained_fingerprint in sides:
            if model is None:
                continue
            actual = signature_of(model)
            if actual.hidden_size != dim:
                raise CheckpointError(
                    f"projector {label} maps {role} hidden size {dim}, but {role} {actual.name!r} has "
                    f"{actual.hidden_size}"
                )
            if trained_fingerprint and actual.fingerprint and actual.fingerprint != trained_fingerprint:
                message = (
                    f"projector {label} was trained for another {role} tokenizer (fingerprint {trained_fingerprint}, "
                    f"{role} {actual.name!r} has {actual.fingerprint})"
                )
                if not force:
                    raise CheckpointError(
                        message + "; --force-projector (darm eval / solve) or force=True (Python) uses it anyway"
                    )
                logger.warning("%s; used anyway (force)", message)
