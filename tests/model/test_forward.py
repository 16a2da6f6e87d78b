"""Output contract of the raw model API: shapes, batch independence, shared vs per-image text."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import SAME_MODEL_REL

from sdk.model import load_checkpoint
from sdk.preprocess import preprocess

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)

# Batched and single-image forwards use different CPU kernels (oneDNN blocking, SIMD tails):
# equal up to float rounding, not bitwise; compared against the largest magnitude of each tensor.


def assert_close_rel(a: torch.Tensor, b: torch.Tensor, rel: float = SAME_MODEL_REL) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=rel * float(b.abs().max()))


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
                assert_close_rel(a, b)
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
        assert_close_rel(a, b, rel=1e-5)  # same image batch: only the text matmuls differ


def test_per_image_vocabularies(tiny_checkpoints, batch):
    model = load_checkpoint(tiny_checkpoints["v2"])
    e1, e2 = model.encode_text(["person", "dog"]), model.encode_text(["car", "bus"])
    with torch.no_grad():
        mixed = model(batch[:2], torch.stack([e1, e2]))
        first = model(batch[:1], e1)
        second = model(batch[1:2], e2)
    for level in range(3):
        assert_close_rel(mixed.cls_logits[level][0], first.cls_logits[level][0])
        assert_close_rel(mixed.cls_logits[level][1], second.cls_logits[level][0])
        assert_close_rel(mixed.box_dists[level][1], second.box_dists[level][0])


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


@pytest.mark.parametrize("variant", ["v2", "v1", "efficient"])
def test_text_mask_slots_change_nothing(tiny_checkpoints, batch, variant):
    """``forward(images, text, text_mask)``: masked slots score -inf and, whatever they hold, change no
    other output; the slots in use equal the model run on them alone (the open-vocabulary export's graph)."""
    model = load_checkpoint(tiny_checkpoints[variant])
    real = model.encode_text(["person", "red car", "a dog"])
    garbage = torch.nn.functional.normalize(torch.randn(3, 512, generator=torch.Generator().manual_seed(0)), dim=-1)
    text = torch.cat([real[:2], garbage[:1], real[2:], garbage[1:]])  # slots 0, 1, 3 in use
    mask = torch.tensor([True, True, False, True, False, False])
    with torch.no_grad():
        masked = model(batch, text, mask)
        other = model(batch, torch.cat([real[:2], -garbage[:1], real[2:], garbage[1:] * 0.5]), mask)
        alone = model(batch, real)
    for level in range(3):
        logits = masked.cls_logits[level]
        assert torch.isneginf(logits[:, ~mask]).all()
        torch.testing.assert_close(logits, other.cls_logits[level], rtol=0, atol=0)  # garbage is invisible
        torch.testing.assert_close(masked.box_dists[level], other.box_dists[level], rtol=0, atol=0)
        assert_close_rel(logits[:, mask], alone.cls_logits[level])  # MatMul vs conv form: rounding only
        assert_close_rel(masked.box_dists[level], alone.box_dists[level])
    with pytest.raises(ValueError, match="text_mask must be"):
        model(batch, text, mask[:3])
