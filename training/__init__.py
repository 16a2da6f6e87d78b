"""Fine-tuning (``python -m training.finetune``): the official YOLO-World recipe (mosaic, mixup,
copy-paste, task-aligned assignment, BCE + CIoU + DFL losses, EMA) in plain PyTorch, with DDP through
torchrun, AMP, resume and COCO validation; with no arguments it runs the demo on a generated dataset.

Pieces: ``config`` (TrainConfig), ``data`` and ``transforms`` (datasets and augmentation), ``assigner``
and ``loss``, ``engine`` (one epoch, evaluation), ``optim``, ``ema``, ``checkpointing``, ``distributed``.
"""
