"""Worker for test_ddp.py: gradients of one step on a fixed batch of 4 images, either in one process
or split over the processes torchrun starts (each gets its share of the batch). Writes rank 0's
gradients to the path in argv[1]. With argv[2] == "prompt": the model frozen and outside DDP, only
shared class embeddings learn (``--mode prompt``), their gradients averaged by
``training.distributed.average_gradients``."""

from __future__ import annotations

import sys

import torch
from torch import nn

from sdk.model import build_model, get_config
from training.distributed import average_gradients, cleanup, init_distributed
from training.loss import YoloWorldLoss


def main() -> None:
    rank, world, _ = init_distributed("cpu")
    torch.manual_seed(0)
    model = build_model(get_config("tiny", "v2"))
    model.text_encoder = None
    model.eval()  # BN on running statistics: batch statistics would differ per shard by design
    g = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 96, 96, generator=g)
    texts = nn.functional.normalize(torch.randn(4, 5, 512, generator=g), dim=-1)
    boxes = torch.tensor([[10, 10, 60, 50], [30, 20, 90, 90], [0, 0, 0, 0]], dtype=torch.float32)
    gt_boxes = boxes[None].repeat(4, 1, 1) + torch.arange(4).float()[:, None, None] * 2
    gt_labels = torch.tensor([[0, 3, 0], [1, 2, 0], [4, 4, 0], [2, 0, 0]])
    gt_mask = torch.tensor([[True, True, False]] * 4)
    part = slice(rank * 4 // world, (rank + 1) * 4 // world)
    loss_fn = YoloWorldLoss(world_size=world)
    if sys.argv[2:] == ["prompt"]:
        model.requires_grad_(False)
        prompts = nn.Parameter(texts[0].clone())  # one row per class, shared by every image
        n = part.stop - part.start
        loss, _ = loss_fn(model(images[part], prompts.expand(n, -1, -1)), gt_labels[part], gt_boxes[part],
                          gt_mask[part])
        loss.backward()
        average_gradients([prompts])
        if rank == 0:
            torch.save({"prompts": prompts.grad.clone()}, sys.argv[1])
        cleanup()
        return
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    loss, _ = loss_fn(net(images[part], texts[part]), gt_labels[part], gt_boxes[part], gt_mask[part])
    loss.backward()
    if rank == 0:
        torch.save({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, sys.argv[1])
    cleanup()


if __name__ == "__main__":
    main()
