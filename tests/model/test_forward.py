"""Output contract of the raw model API: shapes, batch independence, shared vs per-image text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdk.model import load_checkpoint
from sdk.preprocess import preprocess

# Batched and single-image forwards use different CPU kernels (oneDNN blocking, SIMD tails):
# equal up to float rounding, not bitwise.
BATCH_ATOL_REL = 1e-4  # of the largest magnitude of the tensor


@pytest.fixture(scope="module")
def batch(images):
    return torch.from_numpy(preprocess(images, 160)[0])


@pytest.mark.parametrize("variant", ["v2", "v1", "efficient", "efficient_l2"])
def test_shapes_and_batch_independence(tiny_checkpoints, batch, variant):
    model = load_checkpoint(tiny_checkpoints[variant])
    assert not model.training
    emb = model.encode_text(["person", "red car", "a dog", "teddy bear"])
    assert emb.shape == (4, 512) and emb.dtype == torch.float32
    with torch.no_grad():
        out = model(batch, emb)
        singles = [model(batch[i:i + 1], emb) for i in range(len(batch))]
    for level, stride in enumerate((8, 16, 32)):
        assert out.cls_logits[level].shape == (4, 4, 160 // stride, 160 // stride)
        assert out.box_dists[level].shape == (4, 64, 160 // stride, 160 // stride)
        for i, single in enumerate(singles):
            for a, b in ((out.cls_logits[level][i], single.cls_logits[level][0]),
                         (out.box_dists[level][i], single.box_dists[level][0])):
                tol = BATCH_ATOL_REL * float(b.abs().max())
                torch.testing.assert_close(a, b, rtol=0, atol=tol)
    # logits are not degenerate: a test on saturated scores could not fail
    probs = out.cls_logits[0].sigmoid()
    assert 0.001 < float(probs.median()) < 0.5 and float(probs.std()) > 1e-3


def test_shared_text_equals_per_image_text(tiny_checkpoints, batch):
    model = load_checkpoint(tiny_checkpoints["v1"])  # v1 updates text per image inside the neck
    emb = model.encode_text(["person", "red car"])
    with torch.no_grad():
        shared = model(batch, emb)
        per_image = model(batch, emb.expand(len(batch), -1, -1))
    for a, b in zip(shared.cls_logits + shared.box_dists, per_image.cls_logits + per_image.box_dists,
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * float(b.abs().max()))


def test_per_image_vocabularies(tiny_checkpoints, batch):
    model = load_checkpoint(tiny_checkpoints["v2"])
    e1, e2 = model.encode_text(["person", "dog"]), model.encode_text(["car", "bus"])
    with torch.no_grad():
        mixed = model(batch[:2], torch.stack([e1, e2]))
        first = model(batch[:1], e1)
        second = model(batch[1:2], e2)
    torch.testing.assert_close(mixed.cls_logits[1][0], first.cls_logits[1][0], rtol=0, atol=1e-4)
    torch.testing.assert_close(mixed.cls_logits[1][1], second.cls_logits[1][0], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("images_shape", "text_shape", "match"),
    [
        ((1, 3, 100, 160), (2, 512), "multiples of 32"),
        ((1, 1, 160, 160), (2, 512), r"\(B, 3, H, W\)"),
        ((1, 3, 160, 160), (2, 256), "text_embeds must be"),
        ((2, 3, 160, 160), (3, 2, 512), "batch 3 != images batch 2"),
    ],
)
def test_bad_shapes(tiny_checkpoints, images_shape, text_shape, match):
    model = load_checkpoint(tiny_checkpoints["v2"])
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(images_shape), torch.zeros(text_shape))


def test_gradients_reach_every_image_parameter(tiny_checkpoints, batch):
    model = load_checkpoint(tiny_checkpoints["v1"]).train()
    emb = model.encode_text(["person", "red car"])
    out = model(batch[:2], emb)
    loss = sum(t.float().mean() for t in out.cls_logits + out.box_dists)
    loss.backward()
    missing = [n for n, p in model.named_parameters()
               if not n.startswith("text_encoder.") and (p.grad is None or not np.isfinite(
                   p.grad.abs().sum().item()))]
    assert missing == []
