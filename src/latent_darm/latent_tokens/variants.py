"""The variants of ``darm latent-tokens``, one object each, looked up by name everywhere else.

A variant says how it trains (its attention pattern and objective), how it decodes, which teacher-forced one-step
diagnostic it has, its knob (SCDM's number of latent tokens n, AR+MTP's window w, or one fixed value) and how the
table and figures show it. The trainer, the sweep, the report and the CLI ask the entry; adding a variant is one
:func:`register` call with a :class:`DiffusionVariant` (an attention rule from :mod:`.patterns` or a new one), a
:class:`CausalVariant` or a :class:`WindowVariant`. A new *kind* of knob (beside n and w) is a :class:`Sweep` and a
field of the run settings that lists its values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from latent_darm.errors import ConfigError
from latent_darm.latent_tokens.decoding import (
    Decoded,
    DecodeSettings,
    decode_causal,
    decode_diffusion,
    decode_window,
)
from latent_darm.latent_tokens.diagnostic import diffusion_one_step, window_one_step
from latent_darm.latent_tokens.objectives import Batch, ar_batch, diffusion_batch, window_batch
from latent_darm.latent_tokens.patterns import AttentionRule, diffusion_pattern, full, semi_causal, solo
from latent_darm.models.llada.modeling import LLaDAModelLM

Value = int | None  # a knob value; None = all
DIFFUSION, AUTOREGRESSIVE = "diffusion", "autoregressive"  # the figure's two panels


def powers_below(limit: int, start: int) -> tuple[Value, ...]:
    """start (0 or 1), then 1, 2, 4, … strictly below ``limit``, then None (all)."""
    values: list[Value] = [0] if start == 0 else []
    p = 1
    while p < limit:
        values.append(p)
        p *= 2
    return (*values, None)


@dataclass(frozen=True)
class Sweep:
    """A knob a run sweeps over values: its name in the table, the CLI ``option`` and run-settings ``field`` that
    list the values, their range for an answer of ``answer`` cells decoded ``k`` per step, and the values swept
    when none are given."""

    knob: str
    option: str
    field: str
    minimum: int
    maximum: Callable[[int, int], int]  # (answer, k) → the largest value
    defaults: Callable[[int, int], tuple[Value, ...]]  # (answer, k) → the values swept by default
    beyond: str  # why a value above the maximum cannot be run; formatted with value, most, k, answer

    def check(self, values: tuple[Value, ...], answer: int, k: int) -> None:
        """A one-line error naming the option for a value out of range."""
        most = self.maximum(answer, k)
        for value in values:
            if value is not None and value < self.minimum:
                raise ConfigError(f"{self.option}: {value} must be ≥ {self.minimum}")
            if value is not None and value > most:
                why = self.beyond.format(value=value, most=most, k=k, answer=answer)
                raise ConfigError(f"{self.option}: {why}; use 'all'")


LATENT = Sweep(
    knob="n",
    option="--latent-tokens",
    field="latent_values",
    minimum=0,
    maximum=lambda answer, k: answer - k,
    defaults=lambda answer, k: powers_below(answer - k, 0),
    beyond="n={value} latent tokens exceeds the {most} masked positions a step can hold besides the k={k} being"
    " decoded (answer length {answer})",
)
WINDOW = Sweep(
    knob="w",
    option="--windows",
    field="windows",
    minimum=1,
    maximum=lambda answer, k: answer,
    defaults=lambda answer, k: powers_below(answer - 1, 1),
    beyond="window w={value} exceeds the answer length {answer}",
)
SWEEPS = (LATENT, WINDOW)


@dataclass(frozen=True, kw_only=True)
class Variant(ABC):
    """One variant: its ``name`` (CLI, cache directory and results), ``label`` (table and figures), its knob —
    ``knob`` names it in the table and ``value`` is its one value, unless ``sweep`` sweeps it — and how the
    figures draw it (``color``, ``draw_order``, ``marker`` for a single point)."""

    name: str
    label: str
    knob: str | None = None
    value: Value = None
    sweep: Sweep | None = None
    default: bool = True  # in a run that names no variants
    also_by_confidence: bool = False  # under a random order also decoded by top probability over all positions
    one_model_per_window: bool = False  # under --mtp-models per-window, one model per swept w (its training window)
    color: str = "C9"
    draw_order: int = 100  # the figures draw (and list in the legend) variants in this order
    marker: str = "D"
    panel: ClassVar[str]

    def __post_init__(self) -> None:
        if self.sweep is not None and self.knob != self.sweep.knob:
            raise ValueError(f"variant {self.name!r}: knob {self.knob!r} is not its sweep's {self.sweep.knob!r}")

    def resolve(self, value: Value) -> Value:
        """The knob value a pass uses: ``value`` when swept, else the variant's own."""
        return value if self.sweep is not None else self.value

    @property
    def legend(self) -> str:
        return self.label

    @abstractmethod
    def batch(
        self,
        rows: torch.Tensor,
        prompt_length: int,
        mask_id: int,
        generator: torch.Generator,
        window: int | None = None,
        *,
        noise_puzzle: bool = False,
        pad_id: int | None = None,
    ) -> Batch:
        """A training batch under the variant's objective and attention pattern (:mod:`.objectives`)."""

    @abstractmethod
    def decode(
        self,
        model: LLaDAModelLM,
        prompts: torch.Tensor,
        answer_length: int,
        value: Value,
        settings: DecodeSettings,
        generator: torch.Generator | None = None,
    ) -> Decoded:
        """The answers after ``prompts`` at knob ``value`` (:mod:`.decoding`)."""

    @abstractmethod
    def one_step(
        self,
        model: LLaDAModelLM,
        rows: torch.Tensor,
        prompt: int,
        value: Value,
        generator: torch.Generator,
        batch_size: int = 256,
    ) -> dict[str, Any] | None:
        """The teacher-forced one-step diagnostic at knob ``value`` (:mod:`.diagnostic`); None without one."""

    @abstractmethod
    def latent_count(self, value: Value, most: int) -> int:
        """Latent tokens per step at ``value`` for the figure's x axis (``most`` = answer length − k)."""

    @abstractmethod
    def selection(self, settings: DecodeSettings) -> str:
        """How positions are chosen, for the table."""


@dataclass(frozen=True, kw_only=True)
class DiffusionVariant(Variant):
    """Clean-first order under ``attention``; the knob is the number of latent tokens per pass (None = all)."""

    attention: AttentionRule
    panel: ClassVar[str] = DIFFUSION

    def pattern(
        self, clean: int | torch.Tensor, length: int, targets: int = 0, *, chain_targets: bool = False
    ) -> torch.Tensor:
        return diffusion_pattern(self.attention, clean, length, targets, chain_targets=chain_targets)

    def batch(
        self,
        rows: torch.Tensor,
        prompt_length: int,
        mask_id: int,
        generator: torch.Generator,
        window: int | None = None,
        *,
        noise_puzzle: bool = False,
        pad_id: int | None = None,
    ) -> Batch:
        return diffusion_batch(
            rows, prompt_length, mask_id, self.attention, generator, noise_puzzle=noise_puzzle, pad_id=pad_id
        )

    def decode(
        self,
        model: LLaDAModelLM,
        prompts: torch.Tensor,
        answer_length: int,
        value: Value,
        settings: DecodeSettings,
        generator: torch.Generator | None = None,
    ) -> Decoded:
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        latent = self.resolve(value)
        return decode_diffusion(model, prompts, answer_length, self.attention, latent, settings, generator)

    def one_step(
        self,
        model: LLaDAModelLM,
        rows: torch.Tensor,
        prompt: int,
        value: Value,
        generator: torch.Generator,
        batch_size: int = 256,
    ) -> dict[str, Any] | None:
        return diffusion_one_step(model, rows, prompt, self.attention, self.resolve(value), generator, batch_size)

    def latent_count(self, value: Value, most: int) -> int:
        n = self.resolve(value)
        return most if n is None else n

    def selection(self, settings: DecodeSettings) -> str:
        return settings.label()


@dataclass(frozen=True, kw_only=True)
class CausalVariant(Variant):
    """Next-token training and left-to-right decoding over the causal prefix: no latent tokens, no knob."""

    panel: ClassVar[str] = AUTOREGRESSIVE

    @property
    def legend(self) -> str:
        return f"{self.label} (causal)"

    def batch(
        self,
        rows: torch.Tensor,
        prompt_length: int,
        mask_id: int,
        generator: torch.Generator,
        window: int | None = None,
        *,
        noise_puzzle: bool = False,
        pad_id: int | None = None,
    ) -> Batch:
        return ar_batch(rows, prompt_length)

    def decode(
        self,
        model: LLaDAModelLM,
        prompts: torch.Tensor,
        answer_length: int,
        value: Value,
        settings: DecodeSettings,
        generator: torch.Generator | None = None,
    ) -> Decoded:
        return decode_causal(model, prompts, answer_length, settings.temperature, generator)

    def one_step(
        self,
        model: LLaDAModelLM,
        rows: torch.Tensor,
        prompt: int,
        value: Value,
        generator: torch.Generator,
        batch_size: int = 256,
    ) -> dict[str, Any] | None:
        return None

    def latent_count(self, value: Value, most: int) -> int:
        return 0

    def selection(self, settings: DecodeSettings) -> str:
        return "left to right"


@dataclass(frozen=True, kw_only=True)
class WindowVariant(Variant):
    """The prefix and a window of MASK positions, full attention, left to right; the knob is the window w
    (None = all remaining). Trained on the window's loss, or with ``ntp`` on the next token only."""

    ntp: bool = False
    panel: ClassVar[str] = AUTOREGRESSIVE

    def batch(
        self,
        rows: torch.Tensor,
        prompt_length: int,
        mask_id: int,
        generator: torch.Generator,
        window: int | None = None,
        *,
        noise_puzzle: bool = False,
        pad_id: int | None = None,
    ) -> Batch:
        return window_batch(rows, prompt_length, mask_id, window, generator, ntp=self.ntp)

    def decode(
        self,
        model: LLaDAModelLM,
        prompts: torch.Tensor,
        answer_length: int,
        value: Value,
        settings: DecodeSettings,
        generator: torch.Generator | None = None,
    ) -> Decoded:
        return decode_window(model, prompts, answer_length, self.resolve(value), settings.temperature, generator)

    def one_step(
        self,
        model: LLaDAModelLM,
        rows: torch.Tensor,
        prompt: int,
        value: Value,
        generator: torch.Generator,
        batch_size: int = 256,
    ) -> dict[str, Any] | None:
        return window_one_step(model, rows, prompt, self.resolve(value), generator, batch_size)

    def latent_count(self, value: Value, most: int) -> int:
        w = self.resolve(value)
        return most if w is None else w - 1

    def selection(self, settings: DecodeSettings) -> str:
        return "left to right"


VARIANTS: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    """Add ``variant`` to the registry (after the built-ins, in registration order)."""
    if variant.name in VARIANTS:
        raise ValueError(f"variant {variant.name!r} is already registered")
    VARIANTS[variant.name] = variant
    return variant


def get_variant(name: str) -> Variant:
    """The registered variant called ``name``; else a one-line error listing them."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(f"unknown variant {name!r}; expected one of {', '.join(VARIANTS)}") from None


def default_variants() -> tuple[str, ...]:
    """The variants a run trains when none are named: the paper's five (``ar-ntp`` is the opt-in control)."""
    return tuple(name for name, variant in VARIANTS.items() if variant.default)


def drawn(panel: str | None = None) -> list[Variant]:
    """The registered variants (of ``panel``) in the figures' drawing order."""
    return sorted((v for v in VARIANTS.values() if panel in (None, v.panel)), key=lambda v: v.draw_order)


# ---- the built-ins: the paper's five and the AR-NTP control ----------------------------------------------------

# MDM: every masked position is in every pass (n = all); the authors decode it by top probability too
MDM = register(
    DiffusionVariant(name="mdm", label="MDM", attention=full, knob="n", value=None, also_by_confidence=True,
                     color="C0", draw_order=3, marker="s")
)  # fmt: skip
# SIDM: a masked position reads only clean ones (n = 0)
SIDM = register(
    DiffusionVariant(name="sidm", label="SIDM", attention=solo, knob="n", value=0, also_by_confidence=True,
                     color="C1", draw_order=2, marker="s")
)  # fmt: skip
# SCDM: semi-causal, the number of latent tokens per pass swept
SCDM = register(
    DiffusionVariant(name="scdm", label="SCDM", attention=semi_causal, knob="n", sweep=LATENT, color="C2",
                     draw_order=0)
)  # fmt: skip
# AR: causal next-token, no latent tokens
AR = register(CausalVariant(name="ar", label="AR", color="C3", draw_order=4))
# AR+MTP: the window of MASK positions swept; the authors train one model per window
AR_MTP = register(
    WindowVariant(name="ar-mtp", label="AR+MTP", knob="w", sweep=WINDOW, one_model_per_window=True, color="C4",
                  draw_order=1)
)  # fmt: skip
# AR-NTP: every MASK visible, next-token loss only (the control; opt-in)
AR_NTP = register(
    WindowVariant(name="ar-ntp", label="AR-NTP", knob="w", value=None, ntp=True, default=False, color="C5",
                  draw_order=5)
)  # fmt: skip
