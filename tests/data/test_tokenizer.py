"""World tokenizer: ids equal the `rwkv` package's TRIE tokenizer; decoding and streaming."""
from pathlib import Path

import pytest

from rwkvft.data.tokenizer import EOD, WorldTokenizer

SAMPLES = [
    "Hello world",
    "User: 你好，世界！\n\nAssistant: こんにちは 🌍🎉 — ok",
    "tabs\tand\r\nCRLF and control \x01\x7f chars",
    "Ünïcödé façade naïve résumé ñ",
    "  leading spaces and 12345.678e-9 numbers",
    "emoji with skin tone 👍🏽 and ZWJ 👨‍👩‍👧",
    "",
]


@pytest.fixture(scope="module")
def trie():
    import rwkv  # test dependency; its tokenizer module needs no torch
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER
    return TRIE_TOKENIZER(str(Path(rwkv.__file__).with_name("rwkv_vocab_v20230424.txt")))


@pytest.fixture(scope="module")
def tok():
    return WorldTokenizer()


@pytest.mark.parametrize("text", SAMPLES)
def test_same_ids_as_rwkv_package(tok, trie, text):
    assert tok.encode(text) == trie.encode(text)


@pytest.mark.parametrize("text", SAMPLES)
def test_decode_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_byte_tokens_and_eod(tok):
    # ids 1..256 are the single bytes (id = byte + 1); 0 is end-of-document and decodes to ""
    assert tok.decode_bytes([ord("A") + 1, EOD, 0xE4 + 1]) == b"A\xe4"
    assert tok.decode([EOD]) == ""
    assert tok.encode("\x00") == [1]  # the NUL byte is id 1, never the EOD id 0


def test_stream_decoder_holds_incomplete_utf8(tok):
    # a 4-byte emoji fed as single-byte tokens: nothing is printed until it completes
    ids = [b + 1 for b in "🎉".encode("utf-8")]
    d = tok.stream_decoder()
    outs = [d.push(i) for i in ids]
    assert outs == ["", "", "", "🎉"]
    assert d.flush() == ""


def test_stream_decoder_equals_whole_decode(tok):
    text = SAMPLES[1] + SAMPLES[5]
    d = tok.stream_decoder()
    assert "".join(d.push(i) for i in tok.encode(text)) + d.flush() == text


def test_invalid_utf8_becomes_replacement_char(tok):
    assert tok.decode([0xFF + 1]) == "\ufffd"
    d = tok.stream_decoder()
    assert d.push(0xE4 + 1) == "" and d.flush() == "\ufffd"
