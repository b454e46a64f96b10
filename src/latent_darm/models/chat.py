"""Rendering a checkpoint's chat template, with its failures as one line naming the template file.

A chat template is code shipped with a checkpoint: transformers renders it in jinja's immutable sandbox, which
stops a template that reaches for Python internals (``''.__class__.__mro__``) with a ``SecurityError``. That
refusal, a syntax error, and a template that raises on purpose (``raise_exception``) or by accident (``1 + 'a'``)
are all problems of the checkpoint, so they become one :class:`ConfigError` naming the file the template came from
instead of a traceback.

A tokenizer without a chat template (a base model, e.g. Gemma-3-270M) reads plain prompts. Whether that is allowed
is the role's ``chat_template`` mode (auto, required, none: see :class:`~latent_darm.pipelines.spec.
AutoregressiveRole`), applied by :func:`uses_chat_template`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from transformers import PreTrainedTokenizerBase

from latent_darm.errors import ConfigError
from latent_darm.io import notice

# Where transformers reads a chat template from, most specific first (``tokenizer_config.json`` holds it inline).
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")
# Errors a template's own code can raise while it renders (jinja's, and Python's for expressions it evaluates).
TEMPLATE_ERRORS = (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError)


def template_source(tokenizer: PreTrainedTokenizerBase) -> str:
    """The file (or, failing that, the checkpoint) the tokenizer's chat template was read from."""
    directory = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    if str(directory) and directory.is_dir():
        found = next((directory / name for name in TEMPLATE_FILES if (directory / name).is_file()), None)
        return str(found or directory)
    return str(directory) if str(directory) not in ("", ".") else "the tokenizer"


def _problem(exc: Exception) -> str:
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return f"was stopped by jinja's sandbox ({exc})"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"has a syntax error at line {exc.lineno} ({exc.message})"
    detail = str(exc).strip().splitlines()
    return f"raised {type(exc).__name__} while rendering ({detail[0] if detail else 'no message'})"


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], **options: Any) -> str:
    """``tokenizer.apply_chat_template(messages, tokenize=False, **options)``; a template that cannot be rendered
    is a one-line error naming its file."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **options)
    except TEMPLATE_ERRORS as exc:
        raise ConfigError(f"{template_source(tokenizer)}: the chat template {_problem(exc)}") from None


def uses_chat_template(tokenizer: PreTrainedTokenizerBase, mode: str, role: str, reference: str) -> bool:
    """Whether ``role``'s prompts go through its chat template under ``mode``. Without a template, ``required`` is a
    one-line error naming the checkpoint and the option, and ``auto`` falls back to plain prompts with one notice
    line, so a base model is never read as an instruct one unnoticed."""
    if mode == "none":
        return False
    if tokenizer.chat_template is not None:
        return True
    where = reference or template_source(tokenizer)
    if mode == "required":
        raise ConfigError(
            f"{role} {where}: its tokenizer has no chat template, and --chat-template required was given "
            "(auto falls back to plain prompts)"
        )
    hint = " (--chat-template required refuses this)" if role == "executor" else ""
    notice(f"{role} {where}: its tokenizer has no chat template; prompts are plain text{hint}")
    return False
