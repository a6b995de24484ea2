"""Tokenizer: round trip, exact byte accounting, special tokens, save/load, caching."""
import numpy as np
import pytest

from trainer import tokenizer as bpe

CORPUS = [
    "To be, or not to be, that is the question: " * 20,
    "Café, naïve, façade, résumé — déjà vu. " * 20,
    "日本語のテキストと中文文本。 " * 20,
    "Emoji 🙂🚀 and math ∑∫√ symbols. " * 20,
]


@pytest.fixture(scope="module")
def enc():
    return bpe.train(CORPUS, vocab_size=256 + len(bpe.SPECIAL_TOKENS) + 60)


def test_vocab_size_and_special_tokens(enc):
    assert enc.n_vocab == 256 + len(bpe.SPECIAL_TOKENS) + 60
    ids = [enc.encode_single_token(t) for t in bpe.SPECIAL_TOKENS]
    assert ids == list(range(enc.n_vocab - len(ids), enc.n_vocab))  # after the merges


@pytest.mark.parametrize("text", CORPUS + ["unseen: Ærøskøbing ½ ₿ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", ""])
def test_round_trip(enc, text):
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_token_bytes_are_exact_for_split_multibyte_characters(enc):
    lengths = bpe.token_byte_lengths(enc)
    text = "𝔘𝔫𝔦 ₿ Ærø 🙂"  # 4-byte characters absent from training: split into byte tokens
    ids = enc.encode_ordinary(text)
    # Some tokens are not valid UTF-8 on their own (they split a character) ...
    partial = [i for i in ids if not _valid_utf8(enc.decode_single_token_bytes(i))]
    assert partial, "expected tokens that split a multi-byte character"
    # ... and still count their true bytes, so the sum is the text's UTF-8 length exactly.
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    # A lossy decode would count U+FFFD (3 bytes) per fragment: not what we do.
    lossy = sum(len(enc.decode([i]).encode("utf-8")) for i in ids)
    assert lossy != int(lengths[ids].sum())


def test_special_tokens_have_zero_bytes(enc):
    lengths = bpe.token_byte_lengths(enc)
    for t in bpe.SPECIAL_TOKENS:
        assert lengths[enc.encode_single_token(t)] == 0
    assert (lengths[:256] == 1).all()


def test_save_load(enc, tmp_path):
    bpe.save(enc, tmp_path)
    again = bpe.load(tmp_path)
    text = CORPUS[1] + CORPUS[2]
    assert again.encode_ordinary(text) == enc.encode_ordinary(text)
    assert np.array_equal(bpe.load_token_bytes(tmp_path), bpe.token_byte_lengths(enc))
    assert not list(tmp_path.glob("*.tmp-*"))


def test_load_missing_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="autoresearch prepare"):
        bpe.load(tmp_path)


def test_too_small_vocab():
    with pytest.raises(ValueError, match="too small"):
        bpe.train(CORPUS, vocab_size=100)


def test_prepare_tokenizer_wrapper(use_cache):
    from trainer import prepare

    tok = prepare.Tokenizer.from_directory()
    assert tok.get_vocab_size() == 4096
    bos = tok.get_bos_token_id()
    ids = tok.encode("Hello there", prepend=bos)
    assert ids[0] == bos and tok.decode(ids[1:]) == "Hello there"
    assert tok.encode(["a b", "c"], prepend="<|bos|>") == [[bos] + tok.encode("a b"), [bos] + tok.encode("c")]
    tb = prepare.get_token_bytes("cpu")
    assert tb.shape == (4096,) and tb[bos] == 0


def _valid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
