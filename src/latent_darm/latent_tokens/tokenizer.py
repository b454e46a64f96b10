"""The puzzles' character-level vocabulary as a Hugging Face tokenizer (``PreTrainedTokenizerFast``).

Every puzzle and solution character is one token; the specials are ``[PAD] [BOS] [SEP] [EOS] [MASK] [UNK]``.
One vocabulary serves Sudoku (``.`` and digits) and Countdown (digits and ``+-*/=;,:``), so a saved tokenizer
reads either task's rows.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ("[PAD]", "[BOS]", "[SEP]", "[EOS]", "[MASK]", "[UNK]")
SYMBOLS = (".", *"0123456789", *"+-*/=;,:")
VOCABULARY = (*SPECIALS, *SYMBOLS)


def puzzle_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer: one token per character, specials by name."""
    tokenizer = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(VOCABULARY)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        bos_token="[BOS]",
        sep_token="[SEP]",
        eos_token="[EOS]",
        mask_token="[MASK]",
        unk_token="[UNK]",
        clean_up_tokenization_spaces=False,
    )


def symbol_ids(text: str) -> list[int]:
    """Ids of ``text``'s characters (the tokenizer's encoding without going through it); ValueError names an
    unknown character."""
    index = {s: i for i, s in enumerate(VOCABULARY)}
    try:
        return [index[ch] for ch in text]
    except KeyError as exc:
        raise ValueError(f"symbol {exc.args[0]!r} is not in the puzzle vocabulary") from None
