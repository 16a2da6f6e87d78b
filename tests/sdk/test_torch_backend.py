"""The PyTorch backend on the CPU runs the network channels-last (issue 21: oneDNN's layout, no reorder
per layer) and hands back the same outputs as the model in its usual NCHW layout, C-ordered."""

from __future__ import annotations

import numpy as np
import pytest

from tests.parity import SAME_MODEL_REL


@pytest.mark.numeric
@pytest.mark.parametrize("batch", [1, 3])  # batch 1 and 2-8 take different CPU conv kernels in PyTorch
def test_channels_last_outputs_equal_the_nchw_model(tiny_checkpoints, batch):
    import torch

    from sdk.backends.torch import TorchBackend
    from sdk.model import load_checkpoint

    backend = TorchBackend(tiny_checkpoints["v2"])
    text = backend.encode_text(["person", "red car"])
    backend.set_text(text)
    images = np.random.RandomState(batch).rand(batch, 3, 160, 160).astype(np.float32)
    got = backend.infer(images)
    model = load_checkpoint(tiny_checkpoints["v2"]).eval()
    with torch.inference_mode():
        ref = model(torch.from_numpy(images), torch.from_numpy(text))
    want = {f"cls_logits_{i}": t.numpy() for i, t in enumerate(ref.cls_logits)}
    want.update({f"box_dists_{i}": t.numpy() for i, t in enumerate(ref.box_dists)})
    assert sorted(got) == sorted(want)
    for name, value in got.items():
        assert value.flags.c_contiguous and value.dtype == np.float32 and value.shape == want[name].shape, name
        scale = float(np.abs(want[name]).max())
        assert float(np.abs(value - want[name]).max()) <= SAME_MODEL_REL * scale, name
    conv_weights = [p for p in backend.model.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
