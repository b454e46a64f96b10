"""Every prompt the planner and executor see, in one place, overridable from a JSON or YAML file.

The structure follows the paper (our wording): the planner is asked for a short list of hints that must not
give the answer away and never sees the answer-format instruction; the text-space executor reads the plan, then
the question, then the answer format; the latent executor reads only the question and the answer format (the plan
arrives as soft tokens).
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

from latent_darm.errors import ConfigError
from latent_darm.io import parse_json

AnswerType = Literal["math", "integer", "mc"]

# The placeholders each template is formatted with, and those it must hold (a template without ``{question}`` would
# send every item the same prompt; a text executor template without ``{plan}`` would drop the plan).
PLACEHOLDERS = {
    "planner": ("question",),
    "executor_text": ("question", "plan", "answer_format"),
    "executor_latent": ("question", "answer_format"),
    "direct": ("question", "answer_format"),
    "chain_of_thought": ("question", "answer_format"),
}
REQUIRED = {"executor_text": ("question", "plan")}


def check_template(name: str, template: str) -> None:
    """Refuse a template that ``str.format`` would fail on (a KeyError for an unknown placeholder, a ValueError for
    a lone brace) or that lacks a placeholder it needs, naming the template and the placeholder."""
    allowed = PLACEHOLDERS[name]
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"template '{name}': {exc} (write {{{{ and }}}} for literal braces)") from None
    used = {field for _, field, _, _ in parsed if field is not None}
    for field in sorted(used):
        if field not in allowed:
            shown = "{" + field + "}"
            raise ConfigError(
                f"template '{name}': unknown placeholder {shown} (allowed: "
                + ", ".join("{" + a + "}" for a in allowed)
                + "; write {{ and }} for literal braces)"
            )
    for field in REQUIRED.get(name, ("question",)):
        if field not in used:
            raise ConfigError(f"template '{name}' has no {{{field}}} placeholder")
    try:  # what parsing cannot see: a nested placeholder in a format spec, a spec that does not fit a string
        template.format(**dict.fromkeys(allowed, ""))
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ConfigError(f"template '{name}' cannot be formatted ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class PromptTemplates:
    """User-turn templates. Placeholders: ``{question}``, ``{plan}``, ``{answer_format}``. The ``answer_format_*``
    fields are plain text inserted as ``{answer_format}`` (no placeholders of their own)."""

    planner: str = (
        "Write brief hints that would help a student solve the problem below: the key facts, the reasoning "
        "steps in order, useful equations, and any traps. Use at most 120 words. Do not state or hint at the "
        "final answer or at any option letter.\n\nProblem: {question}"
    )
    executor_text: str = (
        "Below is a plan written for the question that follows. Use it to solve the question, but do not trust "
        "any final answer the plan may state.\n\nPlan:\n{plan}\n\nQuestion: {question}\n\n{answer_format}"
    )
    executor_latent: str = "{question}\n\n{answer_format}"
    direct: str = "{question}\n\n{answer_format}"
    chain_of_thought: str = "{question}\n\n{answer_format}"
    answer_format_math: str = "Give only the final answer in \\boxed{}, with no explanation."
    answer_format_mc: str = 'Reply with only the letter of the correct option, as "Answer: X".'
    answer_format_cot_math: str = "Reason step by step, then give the final answer in \\boxed{}."
    answer_format_cot_mc: str = 'Reason step by step, then end with "Answer: X", where X is the option letter.'
    # The autoregressive model's system turn. "" is the paper authors' choice: an empty system turn, which also
    # replaces a template's own default system prompt; None sends no system turn (the template's default applies).
    system_prompt: str | None = ""

    def __post_init__(self) -> None:
        for name in PLACEHOLDERS:
            check_template(name, getattr(self, name))

    def answer_format(self, answer_type: AnswerType, chain_of_thought: bool = False) -> str:
        if answer_type == "mc":
            return self.answer_format_cot_mc if chain_of_thought else self.answer_format_mc
        return self.answer_format_cot_math if chain_of_thought else self.answer_format_math

    def planner_prompt(self, question: str) -> str:
        return self.planner.format(question=question)

    def text_executor_prompt(self, question: str, plan: str, answer_type: AnswerType) -> str:
        return self.executor_text.format(question=question, plan=plan, answer_format=self.answer_format(answer_type))

    def latent_executor_prompt(self, question: str, answer_type: AnswerType) -> str:
        return self.executor_latent.format(question=question, answer_format=self.answer_format(answer_type))

    def soft_token_prompt(self, question: str, answer_type: AnswerType, placement: str) -> str:
        """The latent executor's user text for a soft-token ``placement``. ``inline``: the latent template when it
        holds :data:`PLAN_MARKER` itself, else the text executor's prompt with the marker where the plan text goes
        (the same words around the plan in both channels); the prefix placements: the latent template."""
        from latent_darm.models.splice import PLAN_MARKER  # here: prompts load with `darm --help`, torch must not

        if placement == "inline" and PLAN_MARKER not in self.executor_latent:
            return self.text_executor_prompt(question, PLAN_MARKER, answer_type)
        return self.latent_executor_prompt(question, answer_type)

    def direct_prompt(self, question: str, answer_type: AnswerType, chain_of_thought: bool = False) -> str:
        template = self.chain_of_thought if chain_of_thought else self.direct
        return template.format(question=question, answer_format=self.answer_format(answer_type, chain_of_thought))

    def to_dict(self) -> dict[str, str | None]:
        """Every template; ``system_prompt`` only when it is not the default empty turn, so hashes and stored
        configs made before the setting existed (the same prompts) stay valid."""
        values = asdict(self)
        if values["system_prompt"] == "":
            del values["system_prompt"]
        return values


def load_templates(path: str | Path | None) -> PromptTemplates:
    """Defaults, with any fields given in a JSON or YAML file replaced; unknown fields are an error."""
    if path is None:
        return PromptTemplates()
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"prompt file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"prompt file {path}: not UTF-8 text") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            overrides = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"prompt file {path}: not valid YAML ({problem}{where})") from None
    else:
        overrides = parse_json(text, f"prompt file {path}", ConfigError)
    if not isinstance(overrides, dict):
        raise ConfigError(f"prompt file {path}: expected a mapping of template names to strings")
    known = {f.name for f in fields(PromptTemplates)}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"prompt file {path}: unknown template '{key}' (known: {', '.join(sorted(known))})")
        if not isinstance(value, str) and not (key == "system_prompt" and value is None):
            raise ConfigError(f"prompt file {path}: template '{key}' must be a string")
    try:
        return replace(PromptTemplates(), **overrides)
    except ConfigError as exc:
        raise ConfigError(f"prompt file {path}: {exc}") from None
