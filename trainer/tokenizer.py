"""BPE tokenizer: trained with rustbpe, served as a tiktoken Encoding (immutable).

Token byte lengths are exact: a token's entry in the mergeable ranks *is* its byte
string, so its length is the number of UTF-8 bytes it contributes to the text, even
when it splits a multi-byte character and does not decode on its own.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import tiktoken

from trainer import atomic

BOS = "<|bos|>"
# Reserved for later use (chat turns, document ends) without retraining the merges.
SPECIAL_TOKENS = (BOS, "<|eos|>", "<|reserved_0|>", "<|reserved_1|>")
# GPT-4's split pattern with digit runs capped at 2 (a smaller vocab wastes fewer ids on numbers).
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
ENCODING_FILE = "tokenizer.pkl"
TOKEN_BYTES_FILE = "token_bytes.npy"


def train(texts: Iterable[str], vocab_size: int, name: str = "autoresearch") -> tiktoken.Encoding:
    """Train byte-level BPE on `texts`; ids: 256 bytes, merges, then the special tokens."""
    import rustbpe  # imported here: only training needs it

    n_special = len(SPECIAL_TOKENS)
    if vocab_size < 256 + n_special + 1:
        raise ValueError(f"vocab_size={vocab_size} is too small: need > {256 + n_special}")
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(iter(texts), vocab_size - n_special, pattern=SPLIT_PATTERN)
    ranks = {bytes(tok): rank for tok, rank in bpe.get_mergeable_ranks()}
    specials = {tok: len(ranks) + i for i, tok in enumerate(SPECIAL_TOKENS)}
    return tiktoken.Encoding(
        name=name, pat_str=bpe.get_pattern(), mergeable_ranks=ranks, special_tokens=specials
    )


def token_byte_lengths(enc: tiktoken.Encoding) -> np.ndarray:
    """int32 (n_vocab,): UTF-8 bytes each token contributes; 0 for special tokens."""
    lengths = np.zeros(enc.n_vocab, dtype=np.int32)
    for tok_id in range(enc.n_vocab):
        if tok_id in enc._special_tokens.values():
            continue
        lengths[tok_id] = len(enc.decode_single_token_bytes(tok_id))
    return lengths


def save(enc: tiktoken.Encoding, directory: Path) -> None:
    """Write the encoding and its byte lengths atomically (readers never see half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "name": enc.name,
        "pat_str": enc._pat_str,
        "mergeable_ranks": enc._mergeable_ranks,
        "special_tokens": enc._special_tokens,
    }
    atomic.write_bytes(directory / ENCODING_FILE, pickle.dumps(state))
    with atomic.replacing(directory / TOKEN_BYTES_FILE) as tmp, open(tmp, "wb") as f:
        np.save(f, token_byte_lengths(enc))


def load(directory: Path) -> tiktoken.Encoding:
    path = Path(directory) / ENCODING_FILE
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer at {path}: run `autoresearch prepare` first")
    state = pickle.loads(path.read_bytes())
    return tiktoken.Encoding(**state)


def load_token_bytes(directory: Path) -> np.ndarray:
    return np.load(Path(directory) / TOKEN_BYTES_FILE)


def capped(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    """Yield texts until about max_chars characters have been seen (bounds training time)."""
    seen = 0
    for text in texts:
        if seen >= max_chars:
            return
        seen += len(text)
        yield text

