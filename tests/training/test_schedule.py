"""The schedule rules: the official values come back at COCO scale from official weights, small sets get a
schedule that reaches its peak, typed values win, and a schedule that cannot work says what to change."""

from __future__ import annotations

import dataclasses

import pytest

from training.config import TrainConfig
from training.schedule import resolve_schedule

COCO_TRAIN = 118287


def test_coco_scale_from_official_weights_gives_the_official_recipe():
    for world, batch in ((8, 16), (1, 16), (2, 16)):  # 8 GPUs, or fewer with gradient accumulation
        cfg, s, warnings = resolve_schedule(TrainConfig(batch_size=batch), COCO_TRAIN, 80, world, pretrained=True,
                                            cores=16)
        assert s.nominal_batch == 128 and s.accumulate == 128 // (batch * world)
        assert s.steps_per_epoch == COCO_TRAIN // (batch * world) // s.accumulate  # 924 on 8 GPUs
        assert s.warmup_steps == max(3 * s.steps_per_epoch, 1000)  # the official max(3 epochs, 1000)
        assert s.peak_lr == pytest.approx(2e-4)
        assert s.weight_decay == pytest.approx(0.1)  # 0.05 per 64 images
        assert s.ema_momentum == pytest.approx(1e-4) and s.ema_gamma == pytest.approx(2000)
        assert s.num_texts == 80 and s.workers == 4 and not warnings
        assert (cfg.total_batch_size, cfg.lr, cfg.warmup_iters, cfg.num_texts) == (128, s.peak_lr, s.warmup_steps, 80)
    assert resolve_schedule(TrainConfig(optimizer="sgd"), COCO_TRAIN, 80, 8, True, cores=16)[1].peak_lr == 1e-3


def test_a_few_hundred_images_from_scratch_reach_their_peak():
    """600 images, batch 16, 30 epochs, from scratch (the issue's case): the official recipe would
    accumulate 8 steps (4 optimiser steps per epoch) and warm up for 1000 steps, never reaching its lr."""
    _, s, warnings = resolve_schedule(TrainConfig(epochs=30), 600, 6, 1, pretrained=False, cores=2)
    assert (s.nominal_batch, s.accumulate, s.steps_per_epoch, s.total_steps) == (16, 1, 37, 1110)
    assert s.warmup_steps == 111 < s.total_steps  # a tenth of the run
    assert s.peak_lr == pytest.approx(1e-3)  # 5x the official fine-tuning lr
    assert s.ema_momentum == pytest.approx(1 / 158) and s.ema_gamma == pytest.approx(1110 / 5)
    assert s.num_texts == 6 and s.workers == 2 and not warnings
    # the same data from pre-trained weights keeps the official fine-tuning lr
    assert resolve_schedule(TrainConfig(epochs=30), 600, 6, 1, pretrained=True, cores=2)[1].peak_lr == 2e-4
    # 3000 images: accumulation starts (at least 50 steps per epoch), warm-up still capped
    s = resolve_schedule(TrainConfig(epochs=30), 3000, 6, 1, pretrained=False, cores=2)[1]
    assert (s.nominal_batch, s.accumulate, s.steps_per_epoch) == (64, 4, 46)
    assert s.warmup_steps == 138  # max(3 epochs, 1000) = 1000, capped at 1380 / 10


def test_official_recipe_is_applied_as_it_is_and_warns_where_it_cannot_work():
    _, s, warnings = resolve_schedule(TrainConfig(recipe="official", epochs=30), 600, 6, 1, pretrained=False,
                                      cores=2)
    assert (s.nominal_batch, s.accumulate, s.steps_per_epoch, s.warmup_steps) == (128, 8, 4, 1000)
    assert s.peak_lr == pytest.approx(2e-4) and s.ema_momentum == pytest.approx(1e-4) and s.num_texts == 80
    assert len(warnings) == 1  # 120 steps in all: enough steps, but the warm-up outlasts them
    assert "(1000 optimiser steps) is not over before the run ends (120 steps)" in warnings[0]
    assert "never reaches 0.0002" in warnings[0] and "--warmup-iters" in warnings[0]
    _, _, warnings = resolve_schedule(TrainConfig(recipe="official", epochs=10), 600, 6, 1, False, cores=2)
    assert len(warnings) == 2 and "only 40 optimiser steps in all" in warnings[1]


def test_typed_values_win():
    typed = TrainConfig(epochs=30, total_batch_size=32, lr=5e-4, warmup_iters=7, ema_momentum=0.01, ema_gamma=3.0,
                        workers=0, num_texts=12)
    cfg, s, _ = resolve_schedule(typed, 600, 6, 1, pretrained=False, cores=2)
    assert (s.nominal_batch, s.accumulate, s.peak_lr, s.warmup_steps) == (32, 2, 5e-4, 7)
    assert (s.ema_momentum, s.ema_gamma, s.workers, s.num_texts) == (0.01, 3.0, 0, 12)
    assert cfg == dataclasses.replace(typed, total_batch_size=32)  # nothing typed was changed


def test_too_short_a_run_says_what_to_change():
    _, s, warnings = resolve_schedule(TrainConfig(epochs=2, batch_size=16), 100, 3, 1, pretrained=False, cores=8)
    assert s.total_steps == 12 and s.workers == 4
    assert len(warnings) == 1 and "only 12 optimiser steps in all" in warnings[0] and "Raise --epochs" in warnings[0]


def test_the_demo_types_only_what_a_user_would():
    """The demo gets its schedule from the same rules as everyone: no learning rate, warm-up or EMA of its own."""
    from training.config import DEMO

    assert set(DEMO) <= {"model", "data", "epochs", "imgsz", "batch_size", "output"}
    _, s, warnings = resolve_schedule(TrainConfig(**DEMO), 64, 4, 1, pretrained=False, cores=2)
    assert (s.nominal_batch, s.steps_per_epoch, s.warmup_steps, s.num_texts) == (8, 8, 32, 4) and not warnings


def test_resolve_config_is_the_one_place_a_run_is_decided():
    """Architecture-dependent augmentation (official per-size configs), the polygon-dependent box filter
    and the schedule, in one call; typed values stay."""
    from training.schedule import RunFacts, resolve_config

    facts = RunFacts(train_images=600, num_classes=6, has_polygons=True, arch_size="m", pretrained=True, cores=8)
    cfg, s, warnings = resolve_config(TrainConfig(epochs=30), facts)
    assert (cfg.affine_scale, cfg.mixup_prob, cfg.copypaste_prob, cfg.min_area_ratio) == (0.9, 0.1, 0.1, 0.01)
    assert cfg.lr == pytest.approx(2e-4) and cfg.workers == 4 and s.num_texts == 6 and not warnings
    boxes_only = dataclasses.replace(facts, has_polygons=False, arch_size="s")
    cfg, _, _ = resolve_config(TrainConfig(epochs=30, mixup_prob=0.0), boxes_only)
    assert (cfg.affine_scale, cfg.mixup_prob, cfg.copypaste_prob, cfg.min_area_ratio) == (0.5, 0.0, 0.3, 0.1)
    # every derived field is filled: nothing downstream sees a None
    assert all(getattr(cfg, name) is not None for name in ("lr", "total_batch_size", "warmup_iters", "ema_momentum",
                                                            "ema_gamma", "workers", "num_texts", "affine_scale"))
