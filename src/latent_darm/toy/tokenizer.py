"""A word-level tokenizer for the toy world, in the Hugging Face format with the Llama-3/LLaDA chat template.

Pieces carry the space before them (" and follow", " 7"), so decoding is plain concatenation and every text
round-trips exactly. Two kinds of piece:

* **phrases** — each fixed stretch of the prompt templates (everything between placeholders, e.g. the whole
  planner instruction up to "Problem: ") is one token, as a tokenizer trained on a corpus of these prompts with
  multi-word merges would learn. Prompts then cost a handful of tokens beyond the question, which is what makes
  training the toy models in a couple of CPU minutes possible. The fixed stretches of the world's own texts
  (``QUESTION_PHRASES``: ". Start at", " and follow", ...) are phrases too;
* **words** — words, numbers and single punctuation marks: everything else, including any prompt that does not
  use the default templates. The world's arrows are words too: ``7->3`` in a question and ``7 ->`` in a path are
  one token each, so finding the arrow out of a node is a single attention lookup (no head has to pair a source
  with the target two positions later first) and questions stay short.

The vocabulary holds the phrases, every word of the templates and of the world's texts (with and without its
leading space), numbers below 128 and every printable ASCII character, so the project's real prompts tokenize
without unknown tokens.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from latent_darm.models.tiny import HEADER_CHAT_TEMPLATE, SPECIAL_TOKENS
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.toy.world import ARROW, QUESTION_PHRASES, ToyProblem

UNK_TOKEN = "<|unk|>"
BOXED = "\\boxed{"
# An optional space, then the box opener or an arrow or a word or a number or one other non-space character; or a
# run of newlines; or a run of spaces. Every character of any text falls into exactly one piece.
WORD_PATTERN = r" ?\\boxed\{| ?[0-9]+->[0-9]+| ?[0-9]+ ->| ?->| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]|\n+| +|\s"
_WORDS = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
_SLOTS = ("\x00", "\x01")  # stand-ins for the question and the plan when cutting templates into phrases


def words(text: str) -> list[str]:
    """The word-level pieces of ``text``."""
    return [piece for piece, _ in _WORDS.pre_tokenize_str(text)]


def template_phrases(templates: PromptTemplates) -> list[str]:
    """The fixed stretches of every prompt the templates produce (cut at the question and plan) and of the world's
    texts, longest first."""
    q, plan = _SLOTS
    prompts = [templates.planner_prompt(q)]
    for answer_type in ("integer", "mc"):
        prompts += [
            templates.text_executor_prompt(q, plan, answer_type),
            templates.latent_executor_prompt(q, answer_type),
            templates.direct_prompt(q, answer_type),
            templates.direct_prompt(q, answer_type, chain_of_thought=True),
        ]
    phrases: set[str] = set(QUESTION_PHRASES)
    for prompt in prompts:
        for part in prompt.replace(plan, q).split(q):
            if len(words(part)) > 1:
                phrases.add(part)
    return sorted(phrases, key=lambda p: (-len(p), p))


def _escape(text: str) -> str:
    """``text`` as a literal in an Oniguruma pattern."""
    return "".join(c if c.isalnum() or c == " " else "\\n" if c == "\n" else f"\\x{ord(c):02x}" for c in text)


def _splitter(phrases: list[str]) -> pre_tokenizers.PreTokenizer:
    pattern = "|".join([_escape(p) for p in phrases] + [WORD_PATTERN])
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated")


def world_texts(problems: Iterable[ToyProblem]) -> list[str]:
    """Every text of ``problems`` a model reads or writes (question, plan, worked solution, boxed answer)."""
    return [
        text
        for p in problems
        for text in (p.question, p.plan, p.chain_of_thought, f"{BOXED}{p.answer}}}", f" {BOXED}{p.answer}}}")
    ]


def build_vocabulary(phrases: list[str], texts: Iterable[str], max_number: int = 128) -> list[str]:
    """Special tokens first (fixed ids), then the phrases, then a sorted, deterministic list of word pieces."""
    found: set[str] = set()
    for text in [*texts, *phrases]:
        found.update(words(text))
    # Each word also without/with its leading space, so it is known at the start of a text or after a newline.
    found |= {w.strip() for w in found if w.strip()} | {" " + w for w in found if w.strip() == w and w}
    printable = [c for c in string.printable if not c.isspace()]
    fallback = {*printable, *(" " + c for c in printable), " ", "  ", "\n", "\n\n", "\n\n\n", "\t"}
    numbers = {prefix + str(n) for n in range(max_number) for prefix in ("", " ")}
    pieces = sorted((found | fallback | numbers | {BOXED, " " + BOXED, "user", "assistant", "system"}) - set(phrases))
    return [*SPECIAL_TOKENS, UNK_TOKEN, *phrases, *pieces]


def build_tokenizer(phrases: list[str], texts: Iterable[str], max_number: int = 128) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with ``phrases`` as single tokens; pad ≠ mask, EOS = ``<|endoftext|>``."""
    vocab = {token: i for i, token in enumerate(build_vocabulary(phrases, texts, max_number))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = _splitter(phrases)
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        unk_token=UNK_TOKEN,
        pad_token="<|pad|>",
        mask_token="<|mdm_mask|>",
        additional_special_tokens=["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"],
        chat_template=HEADER_CHAT_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def node_texts(nodes: int) -> list[str]:
    """Every arrow ``a->b`` and path step ``a ->`` between nodes ``0 .. nodes-1``, so the vocabulary does not depend
    on which arrows a sample of problems happens to contain."""
    arrows = [f"{ARROW}".join((str(a), str(b))) for a in range(nodes) for b in range(nodes) if a != b]
    return [" ".join(arrows), " ".join(f"{a} {ARROW}" for a in range(nodes))]


def toy_tokenizer(
    problems: Iterable[ToyProblem], templates: PromptTemplates | None = None, *, nodes: int | None = None
) -> PreTrainedTokenizerFast:
    """The toy world's tokenizer: phrases of ``templates`` (default: the project's), words of ``problems`` and,
    given ``nodes``, every arrow and path step of a world with that many nodes."""
    templates = templates or PromptTemplates()
    texts = world_texts(problems) + (node_texts(nodes) if nodes else [])
    return build_tokenizer(template_phrases(templates), texts)
