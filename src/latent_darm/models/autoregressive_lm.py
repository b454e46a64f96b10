"""The executor: any Hugging Face causal LM plus its tokenizer, decoding greedily from prompts or from soft tokens.

One greedy loop serves both inputs. A batch is left-padded, positions are counted from the attention mask (so a
row decodes the same alone or in a batch), the prompt is encoded once and each new token costs one forward pass
over the KV cache. Soft tokens (projected plan latents) are spliced into the embedded chat prompt by
:mod:`latent_darm.models.splice`.

Conventions:

- ``Generation.token_ids`` are the generated ids **including** the stop token when one was produced, which is how
  the paper counts executor tokens; ``text`` is decoded from the ids before the stop token, specials skipped.
- ``forward_passes`` is the passes this row needed: one per generated token (the prompt pass yields the first).
- Repetition penalty (CTRL / Hugging Face rule: a seen token's logit is divided by the penalty when positive and
  multiplied when negative) covers every token id in the context: the prompt's real tokens and the tokens
  generated so far. Padding and soft tokens have no ids and are never penalised. (``model.generate`` with
  ``inputs_embeds`` alone would penalise only generated tokens; with ``input_ids`` it also penalises pads.)
- Llama-3.x templates write "Today Date: <today>" into the system header; the date is pinned to the templates'
  own fallback (:data:`PINNED_DATE`) so prompts do not change from day to day.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache, DynamicLayer

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.io import read_json_file
from latent_darm.models.chat import render_chat
from latent_darm.models.config_checks import check_generation_config, check_hf_config
from latent_darm.models.diffusion_lm import load_tokenizer
from latent_darm.models.gguf import find_gguf, is_gguf_model, load_gguf, plain_copy
from latent_darm.models.hub import resolve_checkpoint
from latent_darm.models.safetensors_files import checked_weight_files
from latent_darm.models.splice import PLACEMENTS, PLAN_CUE, PLAN_MARKER, left_pad, splice

EOT_TOKENS = ("<|eot_id|>", "<|im_end|>")
PINNED_DATE = "26 Jul 2024"
GENERATION_CONFIG = "generation_config.json"
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass
class Generation:
    """One greedy answer. ``seconds`` is the batch's wall time shared equally among its rows; ``truncated``: the
    token budget ran out before a stop token (the text may be cut mid-answer)."""

    token_ids: list[int]
    text: str
    forward_passes: int
    seconds: float
    truncated: bool = False

    @property
    def num_tokens(self) -> int:
        """Executor tokens as the paper counts them: generated, stop token included."""
        return len(self.token_ids)


def count_generated_tokens(token_ids: Sequence[int], stop_ids: Sequence[int]) -> int:
    """Tokens up to and including the first stop token (all of them when there is none)."""
    stops = set(stop_ids)
    return next((i + 1 for i, t in enumerate(token_ids) if t in stops), len(token_ids))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits [B, V], seen [B, V] bool → [B, V]: seen positive logits / penalty, seen negative × penalty."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """16 hex digits of sha256 over the vocabulary (token → id, added tokens included) and the BOS/EOS tokens.
    The pad token is left out: it is a runtime choice (we fall back to EOS), not part of what a model learned."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    payload = json.dumps({"vocab": vocab, "bos": tokenizer.bos_token, "eos": tokenizer.eos_token}, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """EOS ids of the generation config, the model config and the tokenizer, plus end-of-turn tokens."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        eos = getattr(source, "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else (eos or []))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in EOT_TOKENS if t in vocab)
    return tuple(sorted(ids))


def _first(keys: Any) -> tuple[str, int]:
    names = sorted(keys or ())
    return (names[0] if names else "", len(names))


def _validation_errors() -> tuple[type[Exception], ...]:
    """huggingface_hub's strict-dataclass errors (transformers 5 validates configs with them); none before."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:
        return ()
    return (StrictDataclassError,)


VALIDATION_ERRORS = _validation_errors()


def _reason(exc: Exception) -> str:
    """One line of an exception: a validation error's last line holds the cause, other errors' first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if isinstance(exc, VALIDATION_ERRORS) else lines[0]


def load_causal_lm(directory: Path, dtype: torch.dtype) -> PreTrainedModel:
    """``AutoModelForCausalLM`` from safetensors only, strictly: the config and every weight file are checked
    first, and a checkpoint whose tensors do not match the config (missing, unexpected or misshapen) is refused
    instead of being filled with random weights."""
    config_path = directory / "config.json"
    raw = read_json_file(config_path, CheckpointError)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    check_hf_config(raw, str(config_path))
    generation_path = directory / GENERATION_CONFIG
    if generation_path.is_file():
        check_generation_config(read_json_file(generation_path, CheckpointError), str(generation_path))
    checked_weight_files(directory)
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            # Mismatched shapes are reported below by name (transformers' own error points at a silenced log).
            directory,
            dtype=dtype,
            use_safetensors=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, *VALIDATION_ERRORS) as exc:
        raise CheckpointError(f"executor {directory}: cannot load a causal LM ({_reason(exc)})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    for kind, hint in (("missing", "left at random values"), ("unexpected", "not used by the model")):
        name, count = _first(info.get(f"{kind}_keys"))
        if count:
            raise CheckpointError(
                f"executor {directory}: {count} {kind} tensor(s), first '{name}' ({hint}); config.json does not "
                "match the weights (layer count or architecture) or the checkpoint is incomplete"
            )
    mismatched = sorted(info.get("mismatched_keys") or (), key=str)
    if mismatched:
        first = mismatched[0]
        described = (
            f"'{first[0]}' has shape {list(first[1])}, config.json implies {list(first[2])}"
            if isinstance(first, tuple) and len(first) == 3
            else repr(first)
        )
        raise CheckpointError(
            f"executor {directory}: {len(mismatched)} tensor(s) do not fit config.json, first {described}"
        )
    return model


class AutoregressiveLM:
    """Causal LM + tokenizer + stop ids; greedy answers from prompt strings or from soft tokens + prompts."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, name_or_path: str = "") -> None:
        self.model, self.tokenizer, self.name_or_path = model.eval(), tokenizer, name_or_path
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_token_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.stop_token_ids = _stop_ids(model, tokenizer)
        accepted = inspect.signature(model.forward).parameters
        self._takes_positions = "position_ids" in accepted
        self._takes_logits_to_keep = "logits_to_keep" in accepted
        # transformers ≥ 5.x (e.g. 5.24) renamed ``past_key_values`` to ``cache`` and removes the old name in 5.40;
        # 5.0 and remote-code models only know the old one.
        self._cache_kwarg = "cache" if "cache" in accepted else "past_key_values"
        self._system_ok: bool | None = None

    @classmethod
    def from_pretrained(
        cls, reference: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> AutoregressiveLM:
        """Open a Hugging Face causal-LM directory (or hub id) with ``AutoModelForCausalLM``; no remote code. A
        ``.gguf`` file, or a directory holding one and no ``config.json``, is dequantized to ``dtype``
        (:mod:`latent_darm.models.gguf`)."""
        gguf_file = find_gguf(reference)
        if gguf_file is not None:
            model, tokenizer = load_gguf(gguf_file, dtype)
            return cls(model.to(device), tokenizer, name_or_path=str(reference))
        directory = resolve_checkpoint(reference, "executor")
        if not (directory / "config.json").is_file():
            raise CheckpointError(f"executor {directory}: no config.json")
        model = load_causal_lm(directory, dtype)
        return cls(model.to(device), load_tokenizer(directory), name_or_path=str(reference))

    def save_pretrained(self, directory: str | Path) -> None:
        """A normal safetensors checkpoint, also for a model read from a GGUF file (which transformers refuses)."""
        (plain_copy(self.model) if is_gguf_model(self.model) else self.model).save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    @property
    def hidden_size(self) -> int:
        return self.input_embeddings.embedding_dim

    @property
    def input_embeddings(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def context_length(self) -> int | None:
        """Positions the executor was built for (``max_position_embeddings`` or its older names); None if unknown."""
        return next((getattr(self.model.config, k) for k in CONTEXT_KEYS if getattr(self.model.config, k, None)), None)

    def tokenizer_fingerprint(self) -> str:
        return tokenizer_fingerprint(self.tokenizer)

    # ---- prompts -------------------------------------------------------------------------------------------

    def _tokenize(self, text: str, bos: bool = False) -> list[int]:
        """Ids of ``text`` with no specials added (a chat template writes its own BOS); ``bos`` prepends one."""
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        bos_id = self.tokenizer.bos_token_id
        return [bos_id, *ids] if bos and bos_id is not None and ids[:1] != [bos_id] else ids

    def _template_takes_system(self) -> bool:
        """Whether the chat template renders a system turn (some, e.g. Gemma's, raise on one)."""
        if self._system_ok is None:
            try:
                messages = [{"role": "system", "content": ""}, {"role": "user", "content": "x"}]
                self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                self._system_ok = True
            except Exception:  # jinja raises whatever the template's raise_exception says
                self._system_ok = False
        return self._system_ok

    def _messages(self, user_text: str, system: str | None) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": user_text}]
        if system is not None and self._template_takes_system():
            messages.insert(0, {"role": "system", "content": system})
        return messages

    def chat_text(self, user_text: str, system: str | None = "") -> str | None:
        """The chat-templated prompt with the assistant header, as text; None without a chat template. The
        system turn is sent only when ``system`` is not None and the template accepts one."""
        if self.tokenizer.chat_template is None:
            return None
        return render_chat(
            self.tokenizer, self._messages(user_text, system), add_generation_prompt=True, date_string=PINNED_DATE
        )

    def reply_ids(self, user_text: str, reply: str, system: str | None = "") -> list[int]:
        """Ids of ``reply`` as the assistant turn that follows :meth:`chat_ids`: what the chat template writes after
        the generation prompt (the reply and its end of turn), cut after the first stop token. This is the target a
        trained executor should produce. Without a chat template: the reply and EOS."""
        prompt = self.chat_text(user_text, system)
        if prompt is None:
            eos = self.tokenizer.eos_token_id
            return self._tokenize(reply) + ([] if eos is None else [eos])
        messages = [*self._messages(user_text, system), {"role": "assistant", "content": reply}]
        full = render_chat(self.tokenizer, messages, date_string=PINNED_DATE)
        if not full.startswith(prompt):
            raise ConfigError(
                "the executor's chat template renders an assistant turn that does not extend its generation prompt; "
                "cannot derive the reply's end of turn"
            )
        ids = self._tokenize(full[len(prompt) :])
        return ids[: count_generated_tokens(ids, self.stop_token_ids)]

    def chat_ids(self, user_text: str, system: str | None = "") -> list[int]:
        """Token ids of the chat prompt (assistant header included); raw text with BOS without a template."""
        text = self.chat_text(user_text, system)
        return self._tokenize(user_text, bos=True) if text is None else self._tokenize(text)

    def prompt_ids(self, prompt: str, chat: bool = True, system: str | None = "") -> list[int]:
        return self.chat_ids(prompt, system) if chat else self._tokenize(prompt, bos=True)

    def rendered_prompt(self, prompt: str, chat: bool = True, system: str | None = "") -> str:
        """The text the model reads for ``prompt`` (the chat-templated prompt, or the raw prompt without one)."""
        text = self.chat_text(prompt, system) if chat else None
        return prompt if text is None else text

    def plan_segments(self, prompt: str, placement: str, system: str | None = "") -> tuple[list[int], list[int]]:
        """(ids before the soft tokens, ids after them). ``prefix``: nothing before, the whole chat prompt after.
        ``inline``: the chat prompt split where the user text holds :data:`PLAN_MARKER` (exactly once).
        ``prefix-cue``: nothing before; :data:`PLAN_CUE` (tokenized without BOS), then the whole chat prompt."""
        if placement == "prefix":
            return [], self.chat_ids(prompt, system)
        if placement == "prefix-cue":
            return [], self._tokenize(PLAN_CUE) + self.chat_ids(prompt, system)
        if placement != "inline":
            raise ConfigError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        if prompt.count(PLAN_MARKER) != 1:
            raise ConfigError(f"inline placement needs the prompt to contain {PLAN_MARKER} exactly once")
        text = self.chat_text(prompt, system)
        if text is None:
            before, after = prompt.split(PLAN_MARKER)
            return self._tokenize(before, bos=True), self._tokenize(after)
        if text.count(PLAN_MARKER) != 1:
            raise ConfigError(f"the executor's chat template does not keep {PLAN_MARKER} intact; use prefix placement")
        before, after = text.split(PLAN_MARKER)
        return self._tokenize(before), self._tokenize(after)

    def embed(self, ids: Sequence[int]) -> torch.Tensor:
        """[n] ids → [n, d] input embeddings."""
        return self.input_embeddings(torch.tensor(list(ids), dtype=torch.long, device=self.device))

    # ---- generation ----------------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        repetition_penalty: float = 1.0,
        batch_size: int = 8,
        chat: bool = True,
        system: str | None = "",
    ) -> list[Generation]:
        """Greedy answers to ``prompts`` in input order. ``system``: the chat's system turn (None: none sent)."""
        self._check(prompts, max_new_tokens, repetition_penalty, batch_size)
        ids = [self.prompt_ids(p, chat, system) for p in prompts]
        with torch.no_grad():
            rows = [self.embed(row) for row in ids]
        return self._generate_rows(rows, max_new_tokens, repetition_penalty, batch_size)

    def generate_from_embeddings(
        self,
        prefix_embeds: Sequence[torch.Tensor] | torch.Tensor,
        prompts: Sequence[str],
        *,
        placement: str = "prefix",
        max_new_tokens: int,
        repetition_penalty: float = 1.0,
        batch_size: int = 8,
        system: str | None = "",
    ) -> list[Generation]:
        """Greedy answers with soft tokens spliced into each chat prompt. ``prefix_embeds``: [B, L, d] or B tensors
        [L_i, d] in the executor's embedding space (projector outputs). ``placement``: see :meth:`plan_segments`,
        which refuses an unknown one at the first prompt, before any generation."""
        self._check(prompts, max_new_tokens, repetition_penalty, batch_size)
        if isinstance(prefix_embeds, torch.Tensor) and prefix_embeds.dim() != 3:
            raise ConfigError(
                f"soft tokens must be [B, L, d] or a list of [L, d]; got shape {tuple(prefix_embeds.shape)}"
            )
        if len(prefix_embeds) != len(prompts):
            raise ConfigError(f"{len(prefix_embeds)} soft-token sequences for {len(prompts)} prompts")
        rows = []
        with torch.no_grad():
            for i, (soft, prompt) in enumerate(zip(prefix_embeds, prompts, strict=True)):
                if soft.dim() != 2 or soft.shape[-1] != self.hidden_size:
                    raise ConfigError(
                        f"soft tokens {i} have shape {tuple(soft.shape)}; expected [L, {self.hidden_size}] "
                        f"(the executor's hidden size)"
                    )
                before, after = self.plan_segments(prompt, placement, system)
                soft = soft.to(device=self.device, dtype=self.dtype)
                rows.append(splice(soft, self.embed(before), self.embed(after)))
        return self._generate_rows(rows, max_new_tokens, repetition_penalty, batch_size)

    def _check(self, prompts: Sequence[str], max_new_tokens: int, penalty: float, batch_size: int) -> None:
        if len(prompts) == 0:
            raise ConfigError("no prompts to answer")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ConfigError(f"prompt {i} is empty")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
        if not math.isfinite(penalty) or penalty <= 0:
            raise ConfigError(f"repetition_penalty must be a finite number > 0, got {penalty}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")

    def _generate_rows(
        self, rows: list[torch.Tensor], max_new_tokens: int, penalty: float, batch_size: int
    ) -> list[Generation]:
        """Rows [T_i, d] of input embeddings, decoded in batches of similar length; results in input order."""
        limit = self.context_length
        for i, row in enumerate(rows):
            needed = row.shape[0] + max_new_tokens - 1  # the last generated token is never fed back
            if limit is not None and needed > limit:
                raise ConfigError(
                    f"input {i} has {row.shape[0]} embeddings (soft tokens included) and with max_new_tokens "
                    f"{max_new_tokens} needs {needed} positions; the executor's max_position_embeddings is {limit}"
                )
        order = sorted(range(len(rows)), key=lambda i: rows[i].shape[0])
        results: list[Generation | None] = [None] * len(rows)
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            started = time.perf_counter()
            tokens = self.greedy([rows[i] for i in batch], max_new_tokens, penalty)
            seconds = (time.perf_counter() - started) / len(batch)
            for index, ids in zip(batch, tokens, strict=True):
                truncated = not ids or ids[-1] not in self.stop_token_ids
                results[index] = Generation(ids, self.decode(ids), len(ids), seconds, truncated)
        return [r for r in results if r is not None]

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of the tokens before the first stop token, specials skipped."""
        cut = count_generated_tokens(token_ids, self.stop_token_ids)
        if cut and token_ids[cut - 1] in self.stop_token_ids:
            cut -= 1
        return self.tokenizer.decode(list(token_ids[:cut]), skip_special_tokens=True).strip()

    def _forward(self, **inputs: Any) -> Any:
        if not self._takes_positions:
            inputs.pop("position_ids")
        if self._takes_logits_to_keep:
            inputs["logits_to_keep"] = 1
        return self.model(**inputs, use_cache=True)

    def _new_cache(self, capacity: int) -> Any:
        """A key/value cache whose full-attention layers are preallocated for ``capacity`` positions
        (:class:`PreallocatedLayer`); None when this transformers' cache classes are not the layered ones this was
        written for (the model then builds its own)."""
        try:
            cache = DynamicCache(config=self.model.config)
        except (TypeError, ValueError, AttributeError):
            return None
        layers = getattr(cache, "layers", None)
        if not isinstance(layers, list) or not hasattr(cache, "layer_class_to_replicate"):
            return None
        if layers:
            cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in layers]
        else:
            cache.layer_class_to_replicate = functools.partial(PreallocatedLayer, capacity)
        return cache

    @torch.no_grad()
    def greedy(self, rows: Sequence[torch.Tensor], max_new_tokens: int, penalty: float = 1.0) -> list[list[int]]:
        """One batch: rows [T_i, d] of input embeddings → generated ids per row, cut after the first stop token.
        Prompt pass once, then one cached pass per token over the rows still decoding: a row that produced its stop
        token leaves the batch (its cache rows dropped), and the cache is written in place into room reserved for
        the whole generation, so a step copies nothing it already holds. Each row sees exactly what it saw when
        finished rows were carried along, so the tokens are the same. The repetition penalty covers the tokens
        generated so far only, never the prompt: the authors' executor generated from input embeddings, where
        Hugging Face's penalty sees no prompt ids."""
        embeds, mask, positions = left_pad(rows)
        batch, width = mask.shape
        cache = self._new_cache(width + max_new_tokens)
        masks = mask.new_ones((batch, width + max_new_tokens))  # the attention mask, grown by viewing more of it
        masks[:, :width] = mask
        extra = {} if cache is None else {self._cache_kwarg: cache}
        out = self._forward(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **extra)
        cache = self._cache_of(out) if cache is None else cache
        stops = torch.tensor(self.stop_token_ids, dtype=torch.long, device=embeds.device)
        penalised = None
        if penalty != 1.0:
            penalised = torch.zeros((batch, out.logits.shape[-1]), dtype=torch.bool, device=embeds.device)
        active = list(range(batch))  # the original row of each row still decoding
        generated: list[list[int]] = [[] for _ in range(batch)]
        for step in range(max_new_tokens):
            logits = out.logits[:, -1].float()
            if penalised is not None:
                logits = apply_repetition_penalty(logits, penalised, penalty)
            token = logits.argmax(-1)
            if penalised is not None:
                penalised[torch.arange(len(active)), token] = True
            for row, value in zip(active, token.tolist(), strict=True):
                generated[row].append(value)
            if step == max_new_tokens - 1:
                break
            finished = torch.isin(token, stops)
            if bool(finished.any()):
                keep = (~finished).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                active = [active[i] for i in keep.tolist()]
                token, positions, masks = token[keep], positions[keep], masks[keep]
                penalised = None if penalised is None else penalised[keep]
                cache.batch_select_indices(keep)
            positions = positions[:, -1:] + 1
            out = self._forward(
                input_ids=token[:, None],
                attention_mask=masks[:, : width + step + 1],
                position_ids=positions,
                **{self._cache_kwarg: cache},
            )
        return [row[: count_generated_tokens(row, self.stop_token_ids)] for row in generated]

    def _cache_of(self, out: Any) -> Any:
        return out.cache if self._cache_kwarg == "cache" else out.past_key_values


class PreallocatedLayer(DynamicLayer):
    """One full-attention layer's keys and values in a buffer with room for the whole generation. transformers'
    ``DynamicLayer`` concatenates every step, copying the layer's whole cache each time (a third of a SmolLM2
    chain-of-thought step on CPU); here a step writes its own position in place and the attention reads a view of
    the filled part: the same values in the same order, so the same outputs."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._keys = key_states.new_empty((*key_states.shape[:2], self.capacity, key_states.shape[-1]))
        self._values = value_states.new_empty((*value_states.shape[:2], self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"preallocated cache of {self.capacity} positions asked to hold {end}")
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices`` (rows that finished leave); only the filled positions are copied."""
        if not self.is_initialized:
            return
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = old.new_empty((len(indices), *old.shape[1:]))
            new[:, :, : self.length] = old[indices, :, : self.length]
            setattr(self, name, new)
        self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]
