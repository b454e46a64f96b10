"""LLaDA as a transformers citizen: a ``PretrainedConfig`` / ``PreTrainedModel`` pair registered with the Auto classes
in this process (no remote code, nothing on the hub).

``LLaDAForMaskedLM`` has the very module tree of :class:`LLaDAModelLM` (``model.transformer.blocks.{i}.q_proj`` …)
and runs the same forward code, so published checkpoints load into it unchanged and its outputs are the native
model's; in exchange users get ``save_pretrained`` / ``from_pretrained``, ``device_map="auto"``, gradient
checkpointing and transformers' dtype handling. ``config.json`` is written in the published layout, so the native
reader (``load_llada``, strict about every field) opens what ``save_pretrained`` writes, and vice versa.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel

from latent_darm.models.llada.configuration import _FIXED_VALUES, LLaDAConfig
from latent_darm.models.llada.modeling import LLaDAModel, LLaDAModelLM, RMSNorm

_FIELDS = tuple(f.name for f in fields(LLaDAConfig))


class LLaDAPretrainedConfig(PretrainedConfig):
    """The fields of :class:`LLaDAConfig` under their published names; ``llada()`` returns the checked dataclass."""

    model_type = "llada"

    def __init__(self, **kwargs: Any) -> None:
        defaults = {f.name: f.default for f in fields(LLaDAConfig) if f.default is not MISSING}
        for name in _FIELDS:
            value = kwargs.pop(name, defaults.get(name))
            setattr(self, name, value)
        for name in _FIXED_VALUES:
            kwargs.pop(name, None)
        kwargs.pop("auto_map", None)  # the hub's remote-code pointer; never followed
        self.init_std = kwargs.pop("init_std", 0.02)
        super().__init__(
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
            tie_word_embeddings=bool(self.weight_tying),
            **{k: v for k, v in kwargs.items() if k not in ("pad_token_id", "eos_token_id", "tie_word_embeddings")},
        )

    @classmethod
    def from_llada(cls, config: LLaDAConfig) -> LLaDAPretrainedConfig:
        return cls(**{name: getattr(config, name) for name in _FIELDS})

    def llada(self) -> LLaDAConfig:
        """The native, validated config (errors name the field)."""
        config = LLaDAConfig(**{name: getattr(self, name) for name in _FIELDS if getattr(self, name) is not None})
        config.validate("LLaDAPretrainedConfig")
        return config

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        """The published layout plus transformers' bookkeeping (which the native reader ignores)."""
        out = super().to_dict()
        keep = {k: out[k] for k in ("transformers_version", "dtype", "torch_dtype") if k in out}
        return {**self.llada().to_dict(), **keep, "architectures": ["LLaDAModelLM"]}

    def to_diff_dict(self) -> dict[str, Any]:
        return self.to_dict()


class LLaDAPreTrainedModel(PreTrainedModel):
    config_class = LLaDAPretrainedConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["LLaDABlock"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config, "init_std", 0.02)
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0.0, std)
        elif isinstance(module, RMSNorm):
            module.weight.fill_(1.0)


class LLaDAForMaskedLM(LLaDAPreTrainedModel):
    """The LLaDA mask predictor as a ``PreTrainedModel``: same parameters, same forward as :class:`LLaDAModelLM`."""

    def __init__(self, config: LLaDAPretrainedConfig) -> None:
        super().__init__(config)
        self.model = LLaDAModel(config.llada())
        self.post_init()

    # The native model's methods, shared (they read only ``self.config`` fields both configs have, and
    # ``self.model``): one forward pass, not two copies of it.
    forward = LLaDAModelLM.forward
    lm_head = LLaDAModelLM.lm_head

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer.wte = value

    @classmethod
    def from_native(cls, native: LLaDAModelLM) -> LLaDAForMaskedLM:
        """The same weights (shared, not copied) in the transformers class."""
        with torch.device("meta"):
            model = cls(LLaDAPretrainedConfig.from_llada(native.config))
        model.model = native.model
        return model.to(native.dtype).eval()

    def to_native(self) -> LLaDAModelLM:
        """The same weights (shared) in the native class the sampler and planner use."""
        with torch.device("meta"):
            native = LLaDAModelLM(self.config.llada())
        native.model = self.model
        return native.eval()


_registered = False


def register() -> None:
    """``AutoConfig`` / ``AutoModel`` / ``AutoModelForMaskedLM`` resolve ``model_type "llada"`` to these classes."""
    global _registered
    if _registered:
        return
    AutoConfig.register("llada", LLaDAPretrainedConfig, exist_ok=True)
    AutoModel.register(LLaDAPretrainedConfig, LLaDAForMaskedLM, exist_ok=True)
    AutoModelForMaskedLM.register(LLaDAPretrainedConfig, LLaDAForMaskedLM, exist_ok=True)
    _registered = True
