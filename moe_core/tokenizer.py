"""Byte-level BPE tokenizer (HF `tokenizers`) with character offsets into the original text.

The app colours the original text token by token, so `encode_with_offsets` returns, for every token, a
span of CHARACTER indices into the Python str that was encoded. The guarantee (tested):

    spans tile the text exactly:  start_0 == 0,  start_{i+1} == end_i,  end_last == len(text),
    start_i <= end_i,  and  "".join(text[s:e] for s, e in spans) == text.

Rule: a character belongs to the token that holds its FIRST UTF-8 byte. Byte-level BPE can split one
multi-byte character (an emoji, a CJK ideograph) across tokens; the tokens after the first one that
hold only its continuation bytes get an EMPTY span (start == end), placed right after that character.
So no character is ever coloured twice and every character is coloured once; a token with an empty
span still exists in the id list (its text can be shown with `token_bytes`).

`<|endoftext|>` is the only special token: it separates documents during training (`eot_id(tok)`).
Training is deterministic: the full 256-byte alphabet is given up front, and `tokenizers`' BPE trainer
breaks count ties by pair id.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from moe_core.files import atomic_write

EOT = "<|endoftext|>"
MIN_VOCAB = 257  # 256 byte tokens + <|endoftext|>


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE tokenizer of `vocab_size` tokens (including `<|endoftext|>`) on `texts`.

    No normalizer and no prefix space, so the token bytes concatenate back to the exact UTF-8 text.
    The vocabulary can end up smaller than `vocab_size` when the texts have too few distinct pairs.
    """
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be an int >= {MIN_VOCAB} (256 bytes + {EOT}), got {vocab_size!r}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,  # a merge seen once is noise
        special_tokens=[EOT],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is a token: no unknowns
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def eot_id(tok: Tokenizer) -> int:
    """Id of `<|endoftext|>`, the document separator."""
    tid = tok.token_to_id(EOT)
    if tid is None:
        raise ValueError(f"tokenizer has no {EOT} token")
    return tid


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> None:
    """Write `tok` as `tokenizer.json` at `path`, atomically."""
    atomic_write(path, tok.save)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer saved by `save_tokenizer`; ValueError if the file is missing, corrupt or lacks EOT."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"tokenizer file not found: {path}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"corrupt tokenizer file {path}: {first_line}") from None
    eot_id(tok)  # our tokenizers always have it; fail early for foreign ones
    return tok


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The byte-level alphabet: printable stand-in character -> the byte it encodes (GPT-2 mapping)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _special_contents(tok: Tokenizer) -> set[str]:
    return {t.content for t in tok.get_added_tokens_decoder().values()}


def _piece_bytes(piece: str, specials: set[str]) -> bytes:
    if piece in specials:
        return piece.encode("utf-8")
    decoder = _byte_decoder()
    try:
        return bytes(decoder[c] for c in piece)
    except KeyError:
        raise ValueError(f"token {piece!r} is not a byte-level BPE token") from None


def token_bytes(tok: Tokenizer, token_id: int) -> bytes:
    """The raw bytes a token stands for (special tokens: their UTF-8 content)."""
    piece = tok.id_to_token(token_id)
    if piece is None:
        raise ValueError(f"token id {token_id} is not in the vocabulary")
    return _piece_bytes(piece, _special_contents(tok))


def encode_with_offsets(tok: Tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of `text` and each token's (start, end) character span; see the module docstring.

    Spans are computed from the token bytes, not from `tokenizers`' own offsets, so they tile the text
    exactly whatever the pre-tokenizer trims. A special token written literally in the text is matched
    as that token and spans its characters.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected text (str), got {type(text).__name__}")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (e.g. from "surrogateescape"d bytes): not Unicode text
        raise ValueError(
            f"the text is not valid Unicode: lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}"
        ) from None
    ids = tok.encode(text, add_special_tokens=False).ids
    # char_at_byte[b] = characters starting before byte b = index of the first character starting at or
    # after b (a character starts at every byte that is not a UTF-8 continuation byte 0b10xxxxxx)
    char_at_byte = [0] * (len(raw) + 1)
    for b, byte in enumerate(raw):
        char_at_byte[b + 1] = char_at_byte[b] + (byte & 0xC0 != 0x80)

    spans: list[tuple[int, int]] = []
    pos = 0  # byte position
    specials = _special_contents(tok)
    for tid in ids:
        piece = _piece_bytes(tok.id_to_token(tid), specials)
        end = pos + len(piece)
        if raw[pos:end] != piece:
            raise ValueError("tokenizer does not reproduce the text's bytes (is it byte-level without a normalizer?)")
        spans.append((char_at_byte[pos], char_at_byte[end]))
        pos = end
    if pos != len(raw):
        raise ValueError("tokenizer dropped part of the text (is it byte-level without a normalizer?)")
    return ids, spans
