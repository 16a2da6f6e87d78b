"""Vocabulary parsing, validation and the three prompt-merge modes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdk import Vocabulary, VocabularyError, read_class_texts


def test_from_forms(tmp_path):
    path = tmp_path / "texts.json"
    path.write_text(json.dumps([["person", "human"], ["car"]]))
    assert Vocabulary.from_any(str(path)).prompts == (("person", "human"), ("car",))
    assert Vocabulary.from_any("person, car ,dog").names == ["person", "car", "dog"]
    assert Vocabulary.from_any(["a", ["b", "c"]]).prompts == (("a",), ("b", "c"))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("[]", "non-empty list"),  # empty vocabulary
        ('{"a": 1}', "non-empty list"),  # wrong top-level type
        ('[["person"], []]', "class 1"),  # empty prompt list
        ('[["person"], [3]]', "class 1"),  # non-string prompt
        ('[["person"], [""]]', "class 1"),  # empty prompt
        ("[[", "not valid JSON"),
    ],
)
def test_bad_class_text_json(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(VocabularyError, match=match) as err:
        read_class_texts(path)
    assert "bad.json" in str(err.value)


def test_missing_file_and_empty_list(tmp_path):
    with pytest.raises(VocabularyError, match="does not exist"):
        Vocabulary.from_any(str(tmp_path / "nope.json"))
    with pytest.raises(VocabularyError):
        Vocabulary.from_any([])
    with pytest.raises(VocabularyError):
        Vocabulary.from_any(" , ")


def fake_encode(texts):
    """Deterministic unit vectors per text."""
    rows = [np.random.RandomState(sum(map(ord, t)) + len(t)).randn(8) for t in texts]
    return np.stack([r / np.linalg.norm(r) for r in rows]).astype(np.float32)


def test_merge_first_mean_max_and_padding():
    prompts = [["cat", "kitty"], ["dog"]]
    first = Vocabulary.from_any(prompts)
    assert first.model_texts() == ["cat", "dog"]
    np.testing.assert_array_equal(first.embeddings(fake_encode), fake_encode(["cat", "dog"]))

    mean = Vocabulary.from_any(prompts, merge="mean")
    emb = mean.embeddings(fake_encode)
    expected = fake_encode(["cat", "kitty"]).mean(0)
    np.testing.assert_allclose(emb[0], expected / np.linalg.norm(expected), rtol=1e-6)
    np.testing.assert_allclose(emb[1], fake_encode(["dog"])[0])

    mx = Vocabulary.from_any(prompts, merge="max", pad_prompt=True)
    assert mx.model_texts() == ["cat", "kitty", "dog", " "]
    scores = np.array([[0.1, 0.7, 0.2, 0.9], [0.5, 0.3, 0.4, 0.0]], np.float32)
    expected = np.array([[0.7, 0.2], [0.5, 0.4]], np.float32)  # max(cat, kitty), dog; pad dropped
    np.testing.assert_array_equal(mx.reduce_scores(scores), expected)
    padded_first = Vocabulary.from_any(prompts, pad_prompt=True)
    assert padded_first.model_texts() == ["cat", "dog", " "]
    np.testing.assert_array_equal(padded_first.reduce_scores(scores[:, :3]), scores[:, :2])
