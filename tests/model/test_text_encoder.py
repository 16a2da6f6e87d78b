"""Text tower: open_clip parity, tokenisation, normalisation, padding invariance, the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import TEXT_ATOL, TEXT_BATCHING_ATOL

from sdk.model import TextEncoderConfig, load_text_encoder, tokenize
from sdk.model.text_encoder import EOT_TOKEN, SOT_TOKEN, CLIPTextEncoder, convert_open_clip_state_dict

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)

TINY = TextEncoderConfig(width=128, layers=2, heads=2)
TEXTS = ["person", "red car", "a dog", "Traffic Light", "hot-dog", "what's this?", " "]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    enc = CLIPTextEncoder(TINY).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.05)
    return enc


@pytest.fixture(scope="module")
def open_clip_model():
    """A small randomly initialised open_clip CLIP (QuickGELU, OpenAI layout)."""
    import open_clip

    torch.manual_seed(1)
    model = open_clip.model.CLIP(
        embed_dim=512, quick_gelu=True,
        vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=64, patch_size=32, image_size=64),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=128, heads=2,
                                             layers=2),
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name and name.endswith("weight"):
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0, 0.05)
    return model


def test_open_clip_checkpoint_parity(open_clip_model, tmp_path):
    torch.save(open_clip_model.state_dict(), tmp_path / "open_clip.pt")
    enc = load_text_encoder(tmp_path / "open_clip.pt")
    assert enc.config == TINY
    import open_clip

    tokens = open_clip.tokenize(TEXTS)
    with torch.no_grad():
        ref = open_clip_model.encode_text(tokens, normalize=True)
    got = enc.encode(TEXTS)
    torch.testing.assert_close(got, ref, rtol=0, atol=TEXT_ATOL)


def test_conversion_names_every_text_weight(open_clip_model):
    converted = convert_open_clip_state_dict(open_clip_model.state_dict())
    assert set(converted) == set(CLIPTextEncoder(TINY).state_dict())


def test_tokenize_ids_and_limits():
    ids = tokenize(["a dog", " ", "", "RED  car"])
    assert ids[0][0] == SOT_TOKEN and ids[0][-1] == EOT_TOKEN and len(ids[0]) == 4
    assert ids[1] == ids[2] == [SOT_TOKEN, EOT_TOKEN]  # whitespace is stripped
    assert ids[3] == tokenize(["red car"])[0]  # lower-cased, whitespace collapsed
    with pytest.raises(ValueError, match="tokens long; CLIP's context holds 77"):
        tokenize(["dog " * 80])


def test_normalised_and_padding_invariant(encoder):
    emb = encoder.encode(TEXTS)
    assert emb.shape == (len(TEXTS), 512) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(TEXTS)))
    encoder._memory.clear()
    one_by_one = torch.cat([encoder.encode([t]) for t in TEXTS])  # no padding at all
    encoder._memory.clear()
    chunked = encoder.encode(TEXTS, chunk=3)
    torch.testing.assert_close(one_by_one, emb, rtol=0, atol=TEXT_BATCHING_ATOL)
    torch.testing.assert_close(chunked, emb, rtol=0, atol=TEXT_BATCHING_ATOL)


def test_cache_memory_and_disk(encoder, monkeypatch, tmp_path):
    monkeypatch.setenv("YOLOWORLD_CACHE_DIR", str(tmp_path))
    encoder._memory.clear()
    calls = []
    original = CLIPTextEncoder.forward
    monkeypatch.setattr(CLIPTextEncoder, "forward", lambda self, ids: calls.append(len(ids)) or
                        original(self, ids))
    first = encoder.encode(["person", "car"])
    encoder.encode(["car", "person"])  # memory hit
    assert calls == [2]
    files = list((tmp_path / "text_embeddings").glob("*.npz"))
    assert len(files) == 1 and files[0].stem == encoder.fingerprint()[:32]
    fresh = CLIPTextEncoder(TINY)
    fresh.load_state_dict(encoder.state_dict())  # same weights -> same key -> disk hit
    torch.testing.assert_close(fresh.encode(["person", "car"]), first, rtol=0, atol=0)
    assert calls == [2]
    fresh.encode(["bus"])  # a new text is encoded and appended
    assert calls == [2, 1]
    with torch.no_grad():
        fresh.text_projection.weight.mul_(2)
    fresh.load_state_dict(fresh.state_dict())  # new weights -> new fingerprint, memory dropped
    assert fresh.fingerprint() != encoder.fingerprint()


def test_cache_can_be_disabled(encoder, monkeypatch, tmp_path):
    monkeypatch.setenv("YOLOWORLD_CACHE_DIR", "off")
    encoder._memory.clear()
    encoder.encode(["zebra"])
    assert encoder._cache_file() is None


def test_damaged_cache_is_rebuilt(encoder, monkeypatch, tmp_path):
    monkeypatch.setenv("YOLOWORLD_CACHE_DIR", str(tmp_path))
    path = encoder._cache_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    encoder._memory.clear()
    emb = encoder.encode(["giraffe"])
    assert np.isfinite(emb.numpy()).all()
    with np.load(path) as data:
        assert data["texts"].tolist() == ["giraffe"]
