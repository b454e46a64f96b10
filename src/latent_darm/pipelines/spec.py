"""The pipeline spec: what ``darm eval`` stores in ``config.json`` and :func:`~latent_darm.pipelines.factory.
build_pipeline` builds, as dataclasses with one way to and from JSON.

One class per part: a writer role (:class:`DiffusionRole` with its :class:`SamplerSpec`, or
:class:`AutoregressiveRole`) for the planner and the executor, the :class:`ProjectorSpec`, the :class:`TemplatesSpec`
and the :class:`PipelineSpec` that holds them. :meth:`PipelineSpec.from_dict` checks every key, type and
combination and names the field in a one-line :class:`ConfigError`; construction checks the same combinations.

The JSON layout is the one results directories have always stored, so they load and resume unchanged::

    {"kind": "arm" | "ddlm" | "text" | "latent",
     "planner": role | None, "executor": role,
     "projector": str | None, "chain_of_thought": bool, "latent_noise": float,
     "prompts": str | None, "dtype": "float32" | "bfloat16" | "float16",
     ["system_prompt", "force_projector", "sampler_differs_from_training", "plans"]}
    role = {"kind": "ddlm", "model", "gen_length", "steps", "block_length", "threshold",
            ["cache", any registered family's sampler setting but hidden_layer: "denoise_fraction", ...]}
         | {"kind": "arm", "model", "max_new_tokens", "repetition_penalty", ["chat_template": "required" | "none"]}

Keys in brackets (fields marked :data:`OPTIONAL`; a role's sampler settings but :data:`ALWAYS_STORED`) are written
only when set, so a field or a family's setting added later leaves every stored spec as it was. ``device`` is read
but never written (:data:`RUNTIME`): a run may resume on another device.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, Union

from latent_darm.dtypes import CANONICAL_DTYPES
from latent_darm.errors import ConfigError
from latent_darm.pipelines.prompts import PromptTemplates, load_templates

if TYPE_CHECKING:
    from latent_darm.sampling import SamplerConfig

PIPELINE_KINDS = ("arm", "ddlm", "text", "latent")
# How an autoregressive role treats its chat template: auto (use it; plain prompts with a notice when the tokenizer
# has none), required (refuse a tokenizer without one), none (always plain prompts).
CHAT_TEMPLATE_MODES = ("auto", "required", "none")
ROLE_KINDS = ("ddlm", "arm")
OPTIONAL = {"optional": True}  # field metadata: written only when it differs from the default
RUNTIME = {"runtime": True}  # field metadata: read, never written (not part of the configuration)
WHERE = "pipeline spec"
T = TypeVar("T")


# ----------------------------------------------------------------------------------------------------------------
# Checked reading and writing of flat JSON objects
# ----------------------------------------------------------------------------------------------------------------

_LEAF_TYPES = (int, float, bool, str, dict, type(None))
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "an object"}
_TYPE_NAMES[type(None)] = "null"


def _options(hint: Any) -> tuple[Any, ...]:
    """The plain types a hint allows (``dict[str, Any] | None`` → dict, NoneType)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    return tuple(typing.get_origin(o) or o for o in options)


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of a type ``hint`` (or the tuple of plain types) allows."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    checks = {
        type(None): value is None,
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: number,
        str: isinstance(value, str),
        dict: isinstance(value, dict),
    }
    options = hint if isinstance(hint, tuple) else _options(hint)
    return any(checks[option] if option in checks else isinstance(value, option) for option in options)


def _leaf_fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    """The fields holding plain JSON values (not other parts), with their types."""
    hints = typing.get_type_hints(cls)
    fields = [(f, hints[f.name]) for f in dataclasses.fields(cls)]
    return [(f, hint) for f, hint in fields if all(o in _LEAF_TYPES for o in _options(hint))]


def _read(cls: type, data: Mapping[str, Any], path: str = "", keys: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``cls``'s plain fields from ``data`` (JSON key = field name unless ``keys`` maps it), type-checked; an absent
    field keeps its default, and is an error when it has none. ``path`` prefixes the key in errors."""
    values = {}
    for f, hint in _leaf_fields(cls):
        key = (keys or {}).get(f.name, f.name)
        if key not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{WHERE}: {path}{key} is missing")
            continue
        value = data[key]
        if not _fits(value, hint):
            kinds = " or ".join(_TYPE_NAMES[o] for o in _options(hint))
            raise ConfigError(f"{WHERE}: {path}{key} must be {kinds}, got {value!r}")
        values[f.name] = float(value) if hint is float else value
    return values


def _written(instance: Any, keys: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``instance``'s plain fields as JSON, in field order: runtime ones never, optional ones unless changed."""
    out = {}
    for f, _ in _leaf_fields(type(instance)):
        value = getattr(instance, f.name)
        if f.metadata.get("runtime") or (f.metadata.get("optional") and value == f.default):
            continue
        out[(keys or {}).get(f.name, f.name)] = value
    return out


def _keys(cls: type, keys: Mapping[str, str] | None = None) -> set[str]:
    return {(keys or {}).get(f.name, f.name) for f, _ in _leaf_fields(cls)}


def _refuse_unknown(data: Mapping[str, Any], known: set[str], path: str = "") -> None:
    unknown = [key for key in data if key not in known]
    if unknown:
        raise ConfigError(f"{WHERE}: unknown key {path}{unknown[0]}")


def _build(cls: type[T], values: dict[str, Any], path: str = "") -> T:
    """``cls(**values)``; a combination it refuses is reported with ``path`` (the part of the spec)."""
    try:
        return cls(**values)
    except ConfigError as error:
        if not path:
            raise
        raise ConfigError(f"{WHERE}: {path.rstrip('.')}: {error}") from None


# ----------------------------------------------------------------------------------------------------------------
# The parts
# ----------------------------------------------------------------------------------------------------------------


# The keys every stored diffusion role has (null when unset), then the order stored specs have always written the
# other settings in. Frozen, as the byte layout of stored specs (run identities hash it) depends on it; a setting not
# listed (a family's added later) follows them in the order of :func:`~latent_darm.models.family.setting_types`.
ALWAYS_STORED = ("gen_length", "steps", "block_length", "threshold")
STORED_ORDER = (
    *ALWAYS_STORED, "cache", "denoise_fraction", "early_stop", "temperature", "remasking", "cfg_scale",
    "logits_eos_inf", "confidence_eos_eot_inf", "confidence_eos_every_temperature", "lookahead", "lookahead_choice",
    "top_p", "top_k", "alg_temp", "latent_rows",
)  # fmt: skip
NOT_A_ROLE_SETTING = frozenset({"hidden_layer"})  # the projector's, not the role's


def sampler_settings() -> dict[str, tuple[type, ...]]:
    """The settings a diffusion role may hold, in stored order, with the JSON types each may take (always null too:
    the family's default): every registered family's sampler settings but the latent layer."""
    from latent_darm.models.family import setting_types

    derived = {k: v for k, v in setting_types().items() if k not in NOT_A_ROLE_SETTING}
    order = [k for k in STORED_ORDER if k in derived] + [k for k in derived if k not in STORED_ORDER]
    none = type(None)
    return {k: (*(t for t in derived[k] if t is not none), none) for k in order}


class SamplerSpec:
    """A diffusion writer's sampler settings, any registered family's (names as in the families' configs; the list
    is theirs, see :func:`sampler_settings`), checked by building them for the first family they are valid for.
    :data:`ALWAYS_STORED` are always stored; the rest only when set. Unset (None) takes the default of the planner's
    family. Immutable; compares by its settings."""

    gen_length: int | None  # None only before a latent planner takes its projector's settings
    steps: int | None
    block_length: int | None  # None in a stored spec: a planner family without blocks
    threshold: float | None
    _values: dict[str, Any]  # the set settings, in stored order

    def __init__(self, **settings: Any) -> None:
        known = sampler_settings()
        unknown = [name for name in settings if name not in known]
        if unknown:
            raise ConfigError(f"{unknown[0]} is not a sampler setting of any planner family")
        object.__setattr__(self, "_values", {k: settings[k] for k in known if settings.get(k) is not None})
        if self.gen_length is not None:
            self.config()

    def __getattr__(self, name: str) -> Any:
        """A setting's value (None: unset); called only for names that are not attributes."""
        if not name.startswith("_") and name in sampler_settings():
            return self._values.get(name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SamplerSpec) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return f"SamplerSpec({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def values(self) -> dict[str, Any]:
        """The settings that are set; the others take the defaults of the planner's family."""
        return dict(self._values)

    def to_dict(self) -> dict[str, Any]:
        """The role's sampler keys, in stored order: :data:`ALWAYS_STORED` (null when unset), then the set ones."""
        return {k: self._values.get(k) for k in ALWAYS_STORED} | self._values

    @classmethod
    def read(cls, data: Mapping[str, Any], path: str = "") -> dict[str, Any]:
        """The settings in a role object, type-checked against every family that has each (``path``: for errors)."""
        values = {}
        for key, kinds in sampler_settings().items():
            if key in data:
                if not _fits(data[key], kinds):
                    names = " or ".join(_TYPE_NAMES.get(kind, kind.__name__) for kind in kinds)
                    raise ConfigError(f"{WHERE}: {path}{key} must be {names}, got {data[key]!r}")
                values[key] = data[key]
        return values

    def config(self, **extra: Any) -> SamplerConfig:
        """The sampler settings, plus ``extra``, for the first planner family they are valid for (the spec does not
        know the planner's family; no ``block_length``: one block)."""
        from latent_darm.models.family import sampler_config

        values = self.values()
        if "gen_length" in values:
            values.setdefault("block_length", values["gen_length"])
        return sampler_config(None, **values, **extra)


@dataclass(frozen=True)
class DiffusionRole:
    """A diffusion LM writing a canvas: the plan, or (alone or as executor) the answer. JSON: the sampler's keys sit
    beside ``model`` in the role object."""

    model: str
    sampler: SamplerSpec
    kind: ClassVar[str] = "ddlm"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **_written(self), **self.sampler.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str) -> DiffusionRole:
        from latent_darm.models.family import renamed_settings

        data = renamed_settings(data)  # a spec stored before lookahead took over latent_tokens
        _refuse_unknown(data, {"kind"} | _keys(cls) | set(sampler_settings()), path)
        values = _read(cls, data, path)
        return cls(**values, sampler=_build(SamplerSpec, SamplerSpec.read(data, path), path))


@dataclass(frozen=True)
class AutoregressiveRole:
    """An autoregressive LM writing up to ``max_new_tokens`` greedily: the plan, or the answer. ``chat_template``:
    auto | required | none (:data:`CHAT_TEMPLATE_MODES`; stored only when not auto)."""

    model: str
    max_new_tokens: int
    repetition_penalty: float = 1.0
    chat_template: str = field(default="auto", metadata=OPTIONAL)
    kind: ClassVar[str] = "arm"

    def __post_init__(self) -> None:
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ConfigError(
                f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}; got {self.chat_template!r}"
            )
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **_written(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str) -> AutoregressiveRole:
        _refuse_unknown(data, {"kind"} | _keys(cls), path)
        return _build(cls, _read(cls, data, path), path)


Role = DiffusionRole | AutoregressiveRole


def role_from_dict(data: Any, name: str) -> Role:
    """The ``planner`` or ``executor`` role object."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{WHERE}: {name} must be a role object, got {data!r}")
    kind = data.get("kind")
    if kind == "ddlm":
        return DiffusionRole.from_dict(data, f"{name}.")
    if kind == "arm":
        return AutoregressiveRole.from_dict(data, f"{name}.")
    raise ConfigError(f"role kind must be 'ddlm' or 'arm', got {kind!r}")


@dataclass(frozen=True)
class ProjectorSpec:
    """The latent pipeline's projector directory; ``latent_noise`` (relative to the latents' RMS) is the
    noised-latents control; ``force`` accepts a projector trained for other tokenizers (stored only when set).
    JSON: flat in the pipeline object, as ``projector``, ``latent_noise`` and ``force_projector``."""

    path: str
    latent_noise: float = 0.0
    force: bool = field(default=False, metadata=OPTIONAL)

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("the latent pipeline needs a 'projector'")
        if not math.isfinite(self.latent_noise) or self.latent_noise < 0:
            raise ConfigError(f"latent_noise must be a finite number >= 0, got {self.latent_noise}")


PROJECTOR_KEYS = {"path": "projector", "force": "force_projector"}  # ProjectorSpec field → key in the pipeline


@dataclass(frozen=True)
class TemplatesSpec:
    """Where the prompt templates come from: the built-in ones, or a JSON/YAML file overriding some; with
    ``override_system``, ``system_prompt`` replaces their system turn (None: no system turn). JSON: ``prompts``,
    and ``system_prompt`` only when overridden."""

    prompts: str | None = None
    system_prompt: str | None = None
    override_system: bool = field(default=False, metadata=RUNTIME)

    def load(self) -> PromptTemplates:
        templates = load_templates(self.prompts)
        return replace(templates, system_prompt=self.system_prompt) if self.override_system else templates

    def to_dict(self) -> dict[str, Any]:
        return {"prompts": self.prompts, **({"system_prompt": self.system_prompt} if self.override_system else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemplatesSpec:
        values = {k: v for k, v in _read(cls, data).items() if k != "override_system"}
        return cls(**values, override_system="system_prompt" in data)


@dataclass(frozen=True)
class PipelineSpec:
    """A whole pipeline: its kind, roles, projector (latent only), templates and dtype; ``device`` is where it runs
    this time (runtime only)."""

    kind: str
    executor: Role
    planner: Role | None = None
    projector: ProjectorSpec | None = None
    chain_of_thought: bool = False
    templates: TemplatesSpec = TemplatesSpec()
    dtype: str = "float32"
    # Latent: the planner settings given that differ from the projector's training ({key: {trained, used}}).
    sampler_differs_from_training: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)
    plans: str | None = field(default=None, metadata=OPTIONAL)  # diagnose's setup Y: "recorded" (the run's plans)
    device: str = field(default="cpu", metadata=RUNTIME)

    def __post_init__(self) -> None:
        kind, planner, executor = self.kind, self.planner, self.executor
        if kind not in PIPELINE_KINDS:
            raise ConfigError(f"pipeline kind must be one of {', '.join(PIPELINE_KINDS)}; got {kind!r}")
        if self.dtype not in CANONICAL_DTYPES:  # a stored spec holds canonical names only
            raise ConfigError(f"dtype must be one of {', '.join(CANONICAL_DTYPES)}, got {self.dtype!r}")
        if kind in ("arm", "ddlm"):
            if executor.kind != kind:
                raise ConfigError(f"pipeline {kind!r} needs an executor of kind {kind!r}")
            if planner is not None:
                raise ConfigError(f"pipeline {kind!r} runs one model: its 'planner' must be null")
        elif planner is None:
            raise ConfigError(f"pipeline {kind!r} needs a 'planner' role")
        elif self.chain_of_thought:
            raise ConfigError(f"pipeline {kind!r}: chain_of_thought is for arm or ddlm alone")
        if kind == "latent":
            if planner is None or planner.kind != "ddlm" or executor.kind != "arm":
                raise ConfigError("the latent pipeline pairs a ddlm planner with an arm executor")
            if getattr(executor, "chat_template", "auto") == "none":
                raise ConfigError(
                    "executor chat_template none is not for the latent pipeline (its projector reads the chat prompt)"
                )
            if self.projector is None:
                raise ConfigError("the latent pipeline needs a 'projector'")
        elif self.projector is not None:
            raise ConfigError(f"pipeline {kind!r} has no projector (projector, latent_noise: latent only)")

    @property
    def latent_noise(self) -> float:
        return 0.0 if self.projector is None else self.projector.latent_noise

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout results directories store (runtime fields left out)."""
        return {
            "kind": self.kind,
            "planner": None if self.planner is None else self.planner.to_dict(),
            "executor": self.executor.to_dict(),
            "projector": None if self.projector is None else self.projector.path,
            "chain_of_thought": self.chain_of_thought,
            "latent_noise": self.latent_noise,
            **self.templates.to_dict(),
            **({"force_projector": True} if self.projector is not None and self.projector.force else {}),
            **{k: v for k, v in _written(self).items() if k not in ("kind", "chain_of_thought")},
        }

    @classmethod
    def from_dict(cls, data: Any) -> PipelineSpec:
        """A spec from its JSON layout, as stored or hand-written (absent keys with defaults keep them)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{WHERE} must be a JSON object, got {data!r}")
        projector_keys = _keys(ProjectorSpec, PROJECTOR_KEYS)
        _refuse_unknown(data, {"planner", "executor"} | _keys(cls) | projector_keys | {"prompts", "system_prompt"})
        kind = data.get("kind")
        if kind not in PIPELINE_KINDS:
            raise ConfigError(f"pipeline kind must be one of {', '.join(PIPELINE_KINDS)}; got {kind!r}")
        if not isinstance(data.get("executor"), Mapping):
            raise ConfigError("pipeline spec needs an 'executor' role")
        planner = data.get("planner")
        if kind in ("text", "latent") and not isinstance(planner, Mapping):
            raise ConfigError(f"pipeline {kind!r} needs a 'planner' role")
        projector = None
        if kind == "latent":
            values = {**data, "projector": data.get("projector") or ""}
            projector = _build(ProjectorSpec, _read(ProjectorSpec, values, keys=PROJECTOR_KEYS))
        elif data.get("projector") or data.get("latent_noise"):
            raise ConfigError(f"pipeline {kind!r} has no projector (projector, latent_noise: latent only)")
        values = {
            **_read(cls, data),
            "executor": role_from_dict(data["executor"], "executor"),
            "planner": None if planner is None else role_from_dict(planner, "planner"),
            "projector": projector,
            "templates": TemplatesSpec.from_dict(data),
        }
        return cls(**values)
