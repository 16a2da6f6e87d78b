"""Folding the vocabulary into weights (and BN into convs) keeps the head outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sdk.model import load_checkpoint
from sdk.model.blocks import adaptive_max_pool
from sdk.preprocess import preprocess

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)

FOLD_REL = 1e-4  # of the largest logit / DFL-logit magnitude (float32)


@pytest.mark.parametrize("variant", ["v2", "v1", "efficient", "efficient_l2"])
@pytest.mark.parametrize("fuse_bn", [False, True])
def test_folded_equals_unfolded(tiny_checkpoints, images, variant, fuse_bn):
    model = load_checkpoint(tiny_checkpoints[variant])
    emb = model.encode_text(["person", "red car", "a dog", " "])
    batch = torch.from_numpy(preprocess(images, 160)[0])
    folded = model.fold_text_embeddings(emb, fuse_bn=fuse_bn)
    assert not any("text_encoder" in k for k in folded.state_dict())
    if variant != "v1":  # nothing text-shaped is left but the folded weights
        assert not any(k.endswith("guide_fc.weight") for k in folded.state_dict())
    with torch.no_grad():
        ref = model(batch, emb)
        got = folded(batch)
    for a, b in zip(got.cls_logits + got.box_dists, ref.cls_logits + ref.box_dists, strict=True):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= FOLD_REL * float(b.abs().max())
    # the original model is untouched
    assert model.text_encoder is not None and any(".bn." in k for k in model.state_dict())


@pytest.mark.parametrize("size", [5, 10, 20, 7, 3])
def test_adaptive_max_pool_slices(size):
    x = torch.randn(2, 4, size, size + 2)
    torch.testing.assert_close(adaptive_max_pool(x, 3), F.adaptive_max_pool2d(x, 3).flatten(2), rtol=0, atol=0)
