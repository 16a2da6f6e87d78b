"""The pure-Python CLIP tokenizer: the same ids as open_clip's SimpleTokenizer, with and without the
optional ftfy / regex packages, and the golden ids of the official tokenizer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from sdk.tokenizer import VOCAB_FILE, ClipTokenizer, split_words

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden_text.npz"
SOT, EOT = 49406, 49407

TEXTS = [
    "person", "red car", "Traffic Light", "UPPER lower MiXeD", "  extra   spaces  ", "tab\tnew\nline",
    "", " ", "hot-dog", "what's this?", "It'S mine, isn'T it", "rock'n'roll", "don't ''s", "we'll've'd",
    "café crème", "naïve façade", "Zürich Straße", "e\u0301", "123 4567", "3.14159", "2nd place!!!",
    "½ ¾ ²", "🚗 car 🐶", "👨\u200d👩\u200d👧 family", "👍🏽", "日本語のテキスト", "Ελληνικά", "привет мир",
    "한국어", "ٱلْعَرَبِيَّة", "e-mail@domain.com", "C++ / C#", "(parenthesis) [brackets] {braces}",
    "&amp; &lt;b&gt;", "<end_of_text> hi", "x!<end_of_text>", "<START_OF_TEXT>", "a" * 60,
    "‘quoted’ “double”", "ﬁsh ﬂower", "ＦＵＬＬ　ｗｉｄｔｈ", "ǅemal", "Ĳssel", "a\x00b\x07c",
    "a photo of a large brown dog sleeping on a couch next to a window",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]
FTFY_ONLY = ["â€™ mojibake", "&amp;amp;amp;"]  # repairs the fallback does not make (documented)


def _open_clip_vocab() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open_clip_torch is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / VOCAB_FILE


@pytest.fixture(scope="module")
def vocab_path() -> Path:
    return _open_clip_vocab()


@pytest.fixture(scope="module")
def tok(vocab_path) -> ClipTokenizer:
    return ClipTokenizer(vocab_path)


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("open_clip")
    from open_clip.tokenizer import SimpleTokenizer

    ref = SimpleTokenizer()
    return lambda text: [SOT, *ref.encode(text), EOT]


def test_same_ids_as_open_clip(tok, reference):
    assert len(TEXTS) >= 30
    for text in [*TEXTS, *FTFY_ONLY]:
        assert tok.tokenize([text])[0] == reference(text), text
    assert tok.tokenize(["person"]) == [[SOT, 2533, EOT]]
    assert tok.vocab_size == 49408 and (tok.sot_id, tok.eot_id) == (SOT, EOT)


def test_golden_ids():
    data = np.load(GOLDEN)
    texts = data["texts"].tolist()
    tok = ClipTokenizer(_open_clip_vocab())
    got = tok.tokenize(texts)
    assert len(texts) == 18
    for i, text in enumerate(texts):
        assert got[i] == data[f"input_ids_{i}"].tolist(), text


def test_fallbacks_without_ftfy_and_regex(vocab_path, reference, monkeypatch):
    fallback = ClipTokenizer(vocab_path, use_ftfy=False, use_regex=False)
    for text in TEXTS:
        assert fallback.tokenize([text])[0] == reference(text), text
    for text in FTFY_ONLY:  # mojibake and thrice-nested entities: ftfy-only repairs
        assert fallback.tokenize([text])[0] != reference(text)
    # packages missing: the constructor picks the fallbacks by itself
    monkeypatch.setitem(sys.modules, "ftfy", None)
    monkeypatch.setitem(sys.modules, "regex", None)
    auto = ClipTokenizer(vocab_path)
    assert auto._split is split_words
    assert auto.tokenize(TEXTS) == fallback.tokenize(TEXTS)


def test_word_split_fallback_equals_regex():
    regex = pytest.importorskip("regex")
    import unicodedata

    from sdk.tokenizer import _PATTERN

    find = regex.compile(_PATTERN, regex.IGNORECASE).findall
    chars = [chr(c) for c in [*range(0x0, 0x700), *range(0x2000, 0x2100), *range(0x3000, 0x3100),
                              *range(0xFB00, 0xFB10), *range(0xFF00, 0xFF70), 0x1F600, 0x1F44D]]
    checked = 0
    for c in chars:
        if unicodedata.category(c) == "Cn":
            continue  # unassigned in Python's Unicode database: the one documented difference
        for s in (f"a{c}b'{c}1{c}", f"!{c}!{c}{c}", f"{c}'s"):
            assert split_words(s) == find(s), (hex(ord(c)), s)
        checked += 1
    assert checked > 2000


def test_limits_errors_and_batch(tok):
    ids = tok.tokenize(["a " * 75])
    assert len(ids[0]) == 77
    with pytest.raises(ValueError, match="is 78 tokens long; CLIP's context holds 77"):
        tok.tokenize(["a " * 76])
    with pytest.raises(TypeError, match="prompts must be strings"):
        tok.tokenize([3])
    batch = tok.batch(["person", "red car", ""])
    assert batch.dtype == np.int64
    assert batch.tolist() == [[SOT, 2533, EOT, EOT], [SOT, 736, 1615, EOT], [SOT, EOT, EOT, EOT]]


def test_bad_vocab_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot read the CLIP BPE vocabulary"):
        ClipTokenizer(tmp_path / "missing.txt.gz")
    import gzip

    with gzip.open(tmp_path / "short.txt.gz", "wt") as f:
        f.write("#version\na b\n")
    with pytest.raises(ValueError, match="not a CLIP BPE merges file"):
        ClipTokenizer(tmp_path / "short.txt.gz")
