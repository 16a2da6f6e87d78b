"""Every official key of every size/variant, derived counts and shapes, config inference."""

from __future__ import annotations

import pytest
import torch

from sdk.model import build_model, get_config, infer_config, to_official_state_dict

SIZES = ("s", "m", "l", "x")
VARIANTS = ("v2", "v1", "efficient", "efficient_l2")

# (size, variant) -> (keys incl. 197 text keys, image-side params in millions). Derived in the
# reference spec (YOLOWORLD.md section 3.2) from the official configs; released file sizes agree.
EXPECTED = {
    ("s", "v2"): (608, 12.76), ("m", "v2"): (728, 28.38), ("l", "v2"): (848, 46.83),
    ("x", "v2"): (848, 72.89), ("s", "v1"): (613, 13.38), ("m", "v1"): (733, 29.07),
    ("l", "v1"): (853, 47.55), ("x", "v1"): (853, 73.69),
}


def meta_model(size, variant):
    with torch.device("meta"):
        return build_model(get_config(size, variant))


def image_params(sd):
    return sum(v.numel() for k, v in sd.items() if "text_model" not in k
               and "running_" not in k and "num_batches" not in k) / 1e6


@pytest.mark.parametrize(("size", "variant"), list(EXPECTED))
def test_key_and_parameter_counts(size, variant):
    sd = to_official_state_dict(meta_model(size, variant))
    keys, params = EXPECTED[(size, variant)]
    assert len(sd) == keys
    assert sum("backbone.text_model.model." in k for k in sd) == 197
    assert image_params(sd) == pytest.approx(params, abs=0.005)


# Spot checks of official shapes (YOLOWORLD.md section 3.4), L v2 unless stated.
SHAPES = {
    ("l", "v2"): {
        "backbone.image_model.stem.conv.weight": (64, 3, 3, 3),
        "backbone.image_model.stage1.1.final_conv.conv.weight": (128, 320, 1, 1),
        "backbone.image_model.stage4.2.conv2.conv.weight": (512, 1024, 1, 1),
        "neck.top_down_layers.0.final_conv.conv.weight": (512, 1536, 1, 1),
        "neck.top_down_layers.1.attn_block.guide_fc.weight": (128, 512),
        "neck.top_down_layers.1.attn_block.bias": (4,),
        "neck.bottom_up_layers.1.main_conv.conv.weight": (512, 1024, 1, 1),
        "neck.downsample_layers.1.conv.weight": (512, 512, 3, 3),
        "bbox_head.head_module.cls_preds.1.0.conv.weight": (256, 512, 3, 3),
        "bbox_head.head_module.cls_preds.2.2.weight": (512, 256, 1, 1),
        "bbox_head.head_module.reg_preds.0.2.weight": (64, 64, 1, 1),
        "bbox_head.head_module.cls_contrasts.0.norm.running_var": (512,),
        "bbox_head.head_module.cls_contrasts.2.logit_scale": (),
        "bbox_head.head_module.cls_contrasts.2.bias": (),
        "backbone.text_model.model.text_model.embeddings.token_embedding.weight": (49408, 512),
        "backbone.text_model.model.text_model.encoder.layers.11.mlp.fc1.weight": (2048, 512),
        "backbone.text_model.model.text_projection.weight": (512, 512),
    },
    ("s", "v2"): {
        "backbone.image_model.stem.conv.weight": (32, 3, 3, 3),
        "backbone.image_model.stage4.2.conv1.conv.weight": (256, 512, 1, 1),
        "neck.top_down_layers.0.main_conv.conv.weight": (256, 768, 1, 1),
        "neck.top_down_layers.0.final_conv.conv.weight": (256, 512, 1, 1),
        "neck.bottom_up_layers.1.attn_block.guide_fc.weight": (256, 512),
        "neck.top_down_layers.1.attn_block.bias": (2,),
        "bbox_head.head_module.cls_preds.2.0.conv.weight": (128, 512, 3, 3),
        "bbox_head.head_module.reg_preds.0.0.conv.weight": (64, 128, 3, 3),
    },
    ("m", "v2"): {
        "backbone.image_model.stage4.2.conv1.conv.weight": (288, 576, 1, 1),
        "neck.top_down_layers.0.final_conv.conv.weight": (384, 960, 1, 1),
        "neck.bottom_up_layers.1.attn_block.bias": (9,),
        "neck.top_down_layers.1.attn_block.guide_fc.weight": (96, 512),
    },
    ("x", "v2"): {
        "neck.top_down_layers.0.final_conv.conv.weight": (640, 1920, 1, 1),
        "bbox_head.head_module.reg_preds.0.0.conv.weight": (80, 320, 3, 3),
        "bbox_head.head_module.reg_preds.2.2.weight": (64, 80, 1, 1),
    },
    ("l", "v1"): {
        "neck.text_enhancer.projections.1.conv.weight": (256, 512, 1, 1),
        "neck.text_enhancer.projections.1.conv.bias": (256,),
        "neck.text_enhancer.query.0.weight": (512,),
        "neck.text_enhancer.query.1.weight": (256, 512),
        "neck.text_enhancer.key.1.weight": (256, 256),
        "neck.text_enhancer.proj.weight": (512, 256),
    },
}


@pytest.mark.parametrize(("size", "variant"), list(SHAPES))
def test_official_shapes(size, variant):
    sd = to_official_state_dict(meta_model(size, variant))
    for key, shape in SHAPES[(size, variant)].items():
        assert tuple(sd[key].shape) == shape, key


def test_variant_key_differences():
    v2 = set(to_official_state_dict(meta_model("l", "v2")))
    v1 = set(to_official_state_dict(meta_model("l", "v1")))
    eff = set(to_official_state_dict(meta_model("l", "efficient")))
    assert {k for k in v1 - v2} == {k for k in v1 if "text_enhancer" in k}  # 20 I-Pool keys
    assert len(v1 - v2) == 20 and len(v2 - v1) == 15  # v1 has no contrast BN (3 x 5 keys)
    assert all(".guide_fc." in k or k.endswith("attn_block.bias") for k in v2 - eff)
    assert not any("embed_conv" in k or "position_ids" in k or ".proj" == k[-5:] for k in v2)


@pytest.mark.parametrize("size", (*SIZES, "tiny"))
@pytest.mark.parametrize("variant", VARIANTS)
def test_infer_config_round_trip(size, variant):
    cfg = get_config(size, variant)
    assert infer_config(to_official_state_dict(meta_model(size, variant))) == cfg


def test_clip_large_text_variant_inferred():
    """v2-L with the CLIP ViT-L/14 text tower: every text dimension is 768 (YOLOWORLD.md 3.4)."""
    from dataclasses import replace

    from sdk.model import TextEncoderConfig

    cfg = replace(get_config("l", "v2"), text_channels=768,
                  text_encoder=TextEncoderConfig(width=768, layers=12, heads=12, embed_dim=768))
    with torch.device("meta"):
        sd = to_official_state_dict(build_model(cfg))
    assert tuple(sd["neck.top_down_layers.0.attn_block.guide_fc.weight"].shape) == (256, 768)
    assert tuple(sd["bbox_head.head_module.cls_preds.0.2.weight"].shape) == (768, 256, 1, 1)
    assert tuple(sd["bbox_head.head_module.cls_contrasts.0.norm.weight"].shape) == (768,)
    assert infer_config(sd) == cfg


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_official_state_dict_loads_strictly(size, variant):
    """The loader maps every official key of every size/variant (shapes only, on the meta device)."""
    from sdk.model import load_official_state_dict

    sd = to_official_state_dict(meta_model(size, variant))
    with torch.device("meta"):
        model = build_model(infer_config(sd))
    load_official_state_dict(model, dict(sd), source=f"{size}-{variant}")


def test_efficient_neck_from_vlpan_weights_needs_explicit_drop():
    """Fine-tuning an efficient-neck model from VL-PAN weights drops guide_fc/bias only on request."""
    from sdk import CheckpointError
    from sdk.model import load_official_state_dict

    sd = dict(to_official_state_dict(meta_model("s", "v2")))
    model = meta_model("s", "efficient")
    with pytest.raises(CheckpointError, match="12 unexpected keys"):  # 4 blocks x (weight, bias, bias)
        load_official_state_dict(model, sd)
    load_official_state_dict(model, sd, drop_neck_guides=True)
