"""CLIP's byte-level BPE tokenizer in pure Python (numpy only): no torch, no open_clip.

Gives the same ids as open_clip's ``SimpleTokenizer`` (the tokenizer of ``sdk.model.text_encoder``)
from the same merges file, ``bpe_simple_vocab_16e6.txt.gz`` (MIT-licensed, shipped inside
``open_clip_torch``; the exporter, ``export.text_encoder``, copies it next to an exported text
encoder). Steps:

1. Clean: ``ftfy.fix_text``, HTML-unescape twice, strip, collapse whitespace, lower-case.
   *Without ftfy* (optional dependency) the text gets a smaller fix-up instead: NFC normalisation,
   curly quotes to straight ones, Latin ligatures (``ﬁ``, ``Ĳ``, ``ǅ``, ...) and full-width ASCII
   expanded, control characters dropped. ftfy-only repairs are not reproduced: mojibake
   (``"â€™"`` -> ``"'"``) and HTML entities nested more than twice (``"&amp;amp;amp;"``). Prompts
   without those give the same ids either way.
2. Split into words with CLIP's pattern
   ``<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+``
   (case-insensitive). The ``regex`` package is used when installed (exact). *Without it* a scanner
   over :mod:`unicodedata` categories does the same split; it differs only where the two Unicode
   databases disagree (characters assigned in a newer Unicode version than Python's
   :mod:`unicodedata`); every character assigned in Python's database splits the same (checked
   for all of them, in several contexts, with Python 3.11 / Unicode 14).
3. Each word's UTF-8 bytes are mapped to printable characters, the last one marked end-of-word
   (``</w>``), and adjacent pairs are merged in order of merge rank until no ranked pair is left.
4. Ids: the 256 byte symbols in code-point order, the same 256 with ``</w>``, one id per merge in
   file order, then ``<start_of_text>`` (49406) and ``<end_of_text>`` (49407).
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
SOT_TEXT, EOT_TEXT = "<start_of_text>", "<end_of_text>"
CONTEXT_LENGTH = 77
_NUM_MERGES = 49152 - 256 - 2  # merges used by CLIP: lines 1..48894 of the file (line 0: version)
_CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")
_PATTERN = (r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
            r"[^\s\p{L}\p{N}]+")


def byte_symbols() -> list[str]:
    """Byte value -> the printable character standing for it in the BPE vocabulary.

    Bytes that are visible Latin-1 characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for
    themselves; the other 68 bytes take code points 256, 257, ... in increasing byte order.
    """
    visible = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = [], 0
    for b in range(256):
        if b in visible:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


# ---- cleaning ------------------------------------------------------------------------------------
_QUOTES = {**{c: "'" for c in "\u02bc\u2018\u2019\u201a\u201b"}, **{c: '"' for c in "\u201c\u201d\u201e\u201f"}}
_NFKC_RANGES = ((0xFB00, 0xFB06), (0x0132, 0x0133), (0x01C4, 0x01CC), (0x01F1, 0x01F3),
                (0xFF01, 0xFF5E), (0x3000, 0x3000))  # ligatures, full-width ASCII, ideographic space


def _light_fix(text: str) -> str:
    """The ftfy-free fix-up (see the module docstring)."""
    text = unicodedata.normalize("NFC", text)
    out = []
    for ch in text:
        cp = ord(ch)
        if ch in _QUOTES:
            out.append(_QUOTES[ch])
        elif any(a <= cp <= b for a, b in _NFKC_RANGES):
            out.append(unicodedata.normalize("NFKC", ch))
        elif unicodedata.category(ch) == "Cc" and not ch.isspace():
            continue
        else:
            out.append(ch)
    return "".join(out)


def _fix_text():
    try:
        import ftfy
    except ImportError:
        return _light_fix
    return ftfy.fix_text


def clean(text: str, fix=None) -> str:
    """open_clip's ``lower`` cleaning: fix, HTML-unescape twice, collapse whitespace, lower-case."""
    text = (fix or _fix_text())(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


# ---- word split ----------------------------------------------------------------------------------
def _regex_split():
    try:
        import regex
    except ImportError:
        return None
    return regex.compile(_PATTERN, regex.IGNORECASE).findall


def _kind(ch: str) -> str:
    """'L' letter, 'N' number, 'S' skipped (Unicode White_Space; U+0345, which case-folds to a
    letter, so that neither letter class nor non-letter class takes it), 'P' anything else."""
    if (ch.isspace() and not "\x1c" <= ch <= "\x1f") or ch == "\u0345":
        return "S"
    cat = unicodedata.category(ch)[0]
    return cat if cat in "LN" else "P"


def _fold(ch: str) -> str:
    return "s" if ch == "\u017f" else ch.lower()  # long s is the only non-ASCII fold we meet here


def split_words(text: str) -> list[str]:
    """CLIP's pattern without the ``regex`` package: at each position try, in the pattern's order,
    the special tokens, the contractions (case-insensitive), a letter run, one number, a run of
    other non-space characters; whitespace matches nothing and is skipped."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        for special in (SOT_TEXT, EOT_TEXT):
            if text.startswith(special, i):
                words.append(special)
                i += len(special)
                break
        else:
            ch = text[i]
            if ch == "'":
                hit = next((c for c in _CONTRACTIONS if i + len(c) < n and
                            "".join(_fold(x) for x in text[i + 1:i + 1 + len(c)]) == c), None)
                if hit is not None:
                    words.append(text[i:i + 1 + len(hit)])
                    i += 1 + len(hit)
                    continue
            kind = _kind(ch)
            if kind == "S":
                i += 1
                continue
            j = i + 1
            if kind != "N":
                while j < n and _kind(text[j]) == kind:
                    j += 1
            words.append(text[i:j])
            i = j
    return words


# ---- tokenizer -----------------------------------------------------------------------------------
class ClipTokenizer:
    """``tokenize(texts)`` -> id lists with start/end tokens, as ``sdk.model.tokenize``.

    Args:
        vocab_path: the gzipped BPE merges file (``bpe_simple_vocab_16e6.txt.gz``).
        context_length: longest id sequence, start and end tokens included (CLIP: 77).
        use_ftfy, use_regex: ``None`` uses the package when installed; ``False`` forces the
            fallback (see the module docstring).
    """

    def __init__(self, vocab_path: str | os.PathLike, context_length: int = CONTEXT_LENGTH,
                 use_ftfy: bool | None = None, use_regex: bool | None = None) -> None:
        path = Path(vocab_path)
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, EOFError) as e:
            raise FileNotFoundError(f"{path}: cannot read the CLIP BPE vocabulary ({VOCAB_FILE}): {e}") from None
        merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES + 1]]
        if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{path}: not a CLIP BPE merges file (expected {_NUM_MERGES} merge lines)")
        symbols = byte_symbols()
        base = sorted(symbols)  # ids 0..255 in code-point order: visible bytes, then the moved ones
        vocab = base + [s + "</w>" for s in base] + ["".join(m) for m in merges] + [SOT_TEXT, EOT_TEXT]
        self.encoder = {s: i for i, s in enumerate(vocab)}
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.byte_map = symbols
        self.sot_id, self.eot_id = self.encoder[SOT_TEXT], self.encoder[EOT_TEXT]
        self.vocab_size = len(vocab)
        self.context_length = context_length
        self._fix = _fix_text() if use_ftfy is not False else _light_fix
        split = _regex_split() if use_regex is not False else None
        self._split = split or split_words
        self._cache: dict[str, list[int]] = {SOT_TEXT: [self.sot_id], EOT_TEXT: [self.eot_id]}

    def _bpe(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        parts = [self.byte_map[b] for b in word.encode("utf-8")]
        parts[-1] += "</w>"
        while len(parts) > 1:
            best, best_rank = None, None
            for pair in itertools.pairwise(parts):  # the lowest-ranked adjacent pair is merged next
                rank = self.ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            merged, i = [], 0
            while i < len(parts):  # every occurrence, left to right, without overlap
                if i + 1 < len(parts) and parts[i] == best[0] and parts[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self.encoder[p] for p in parts]
        if len(self._cache) < 100_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens."""
        if not isinstance(text, str):
            raise TypeError(f"prompts must be strings, got {type(text).__name__}: {text!r}")
        return [i for word in self._split(clean(text, self._fix)) for i in self._bpe(word)]

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids with start/end tokens, one list per text; raises if a text exceeds the context."""
        if isinstance(texts, str):
            texts = [texts]
        out = []
        for text in texts:
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > self.context_length:
                raise ValueError(f"prompt {text[:60]!r} is {len(ids)} tokens long; CLIP's context "
                                 f"holds {self.context_length} (start and end tokens included)")
            out.append(ids)
        return out

    def batch(self, texts: Sequence[str]) -> np.ndarray:
        """int64 ``(N, T)``, T the longest text's length, right-padded with the end token."""
        ids = self.tokenize(texts)
        out = np.full((len(ids), max((len(i) for i in ids), default=2)), self.eot_id, np.int64)
        for row, seq in enumerate(ids):
            out[row, :len(seq)] = seq
        return out


@functools.lru_cache(maxsize=4)
def load_tokenizer(vocab_path: str, context_length: int = CONTEXT_LENGTH) -> ClipTokenizer:
    """A shared tokenizer per vocabulary file (reading the merges takes ~0.1 s)."""
    return ClipTokenizer(vocab_path, context_length)


__all__ = ["CONTEXT_LENGTH", "VOCAB_FILE", "ClipTokenizer", "byte_symbols", "clean", "load_tokenizer",
           "split_words"]
