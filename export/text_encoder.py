"""CLIP text tower to ONNX: token ids in, L2-normalised text embeddings out (torch-free prompts).

The graph ``input_ids`` int64 ``(N, T)`` (dynamic N and T <= context length, right-padded with the
end token 49407) -> ``text_embeds`` float32 ``(N, D)``, L2-normalised. It is the module's
``forward`` written out with export-friendly pieces: an explicit causal mask built for the input's
T (``Range`` + ``Less`` + ``Where``; no fixed-size mask), softmax attention, first-end-token pooling
as ``ArgMax(ids == EOT)`` + ``GatherElements``, and the L2 normalisation. The BPE merges file that
``sdk.tokenizer`` reads is copied beside the graph.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sdk.atomic import atomic_path
from sdk.model.text_encoder import EOT_TOKEN, SOT_TOKEN, CLIPTextEncoder
from sdk.tokenizer import VOCAB_FILE, ClipTokenizer

from .onnx_export import simplify_and_check, trace_to_onnx
from .verify import DEFAULT_TOLERANCE, HOW_TO_PROCEED, ExportError, Tolerance

METADATA_KEY = "yoloworld_text_encoder"
INPUT_NAME, OUTPUT_NAME = "input_ids", "text_embeds"
# Varied lengths, scripts, punctuation and padding for the export self-check.
CHECK_TEXTS = ("person", "red car", "a dog", "Traffic Light", "hot-dog", "what's this?", " ", "café crème",
               "🚗 car 🐶", "123 4567", "日本語のテキスト", "a photo of a large brown dog sleeping on a couch",
               "(parenthesis) [brackets] {braces}", "über-cool 2nd place!!!")


def open_clip_vocab_file() -> Path:
    """open_clip's ``bpe_simple_vocab_16e6.txt.gz`` (MIT), found without importing open_clip."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError("open_clip_torch is not installed; it ships the CLIP BPE vocabulary "
                          f"({VOCAB_FILE}) that the exported text encoder needs")
    path = Path(next(iter(spec.submodule_search_locations))) / VOCAB_FILE
    if not path.is_file():
        raise ExportError(f"{path} is missing from the open_clip_torch install")
    return path


def _attention(attn: nn.Module, x: Tensor, causal: Tensor) -> Tensor:
    """The block's attention with an explicit mask: ``causal`` (T, T) True where j > i."""
    b, t, _ = x.shape
    q, k, v = (p(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
               for p in (attn.q_proj, attn.k_proj, attn.v_proj))  # (B, h, T, d)
    logits = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    logits = logits.masked_fill(causal, float("-inf"))
    y = torch.matmul(logits.softmax(-1), v)
    return attn.out_proj(y.transpose(1, 2).reshape(b, t, -1))


class TextEncoderGraph(nn.Module):
    """``forward(ids) -> text_embeds`` normalised; the trained submodules of ``encoder``, unchanged."""

    def __init__(self, encoder: CLIPTextEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: Tensor) -> Tensor:
        tm = self.encoder.text_model
        t = ids.shape[1]
        x = tm.embeddings.token_embedding(ids) + tm.embeddings.position_embedding.weight[:t]
        pos = torch.arange(t, device=ids.device)
        causal = pos[None, :] > pos[:, None]  # (T, T), built for this T
        for layer in tm.encoder.layers:
            x = x + _attention(layer.self_attn, layer.layer_norm1(x), causal)
            x = x + layer.mlp(layer.layer_norm2(x))
        x = tm.final_layer_norm(x)
        eot = (ids == EOT_TOKEN).to(torch.int32).argmax(dim=1)  # first end token (ties: first index)
        pooled = torch.gather(x, 1, eot[:, None, None].expand(-1, 1, x.shape[2]))[:, 0]
        emb = self.encoder.text_projection(pooled)
        return emb / emb.norm(dim=-1, keepdim=True)


def _reference(encoder: CLIPTextEncoder, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        emb = encoder(torch.from_numpy(ids)).float()
    return (emb / emb.norm(dim=-1, keepdim=True)).numpy()


def verify_text_encoder(path: str | os.PathLike, encoder: CLIPTextEncoder, tokenizer: ClipTokenizer,
                        texts: tuple[str, ...] = CHECK_TEXTS, atol: float = DEFAULT_TOLERANCE.text_atol) -> float:
    """Max |embedding| difference ONNX Runtime (CPU) vs ``encoder.forward`` (normalised) over
    ``texts`` in three batchings (all at once, one by one, two uneven chunks: several N and T) and
    a text of the full context length;
    raises :class:`ExportError` beyond ``atol``."""
    import onnxruntime as ort

    texts = list(texts)
    longest = "a " * (tokenizer.context_length - 3) + "dog"  # T = context length, on its own (cheap)
    chunks = [texts, *[[t] for t in [*texts, longest]], texts[: len(texts) // 3], texts[len(texts) // 3:]]
    batches = [tokenizer.batch(chunk) for chunk in chunks]
    refs = [_reference(encoder, ids) for ids in batches]  # before ORT's threads start spinning
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for ids, ref in zip(batches, refs, strict=True):
        got = session.run([OUTPUT_NAME], {INPUT_NAME: ids})[0]
        worst = max(worst, float(np.abs(got - ref).max()))
    if not worst <= atol:
        raise ExportError(f"export self-check failed: the text encoder's ONNX Runtime embeddings differ from "
                          f"PyTorch's by up to {worst:.3g} (bound {atol:.3g}; unit vectors, {len(texts) + 1} texts "
                          f"batched three ways). {HOW_TO_PROCEED}")
    return worst


def export_text_encoder(encoder: CLIPTextEncoder, path: str | os.PathLike, opset: int = 17,
                        simplify: bool = True, log: Any = print, tolerance: Tolerance | None = DEFAULT_TOLERANCE
                        ) -> float | None:
    """Write ``path`` (``input_ids`` -> ``text_embeds``, see the module docstring) atomically and
    ``bpe_simple_vocab_16e6.txt.gz`` beside it; check it against PyTorch with ONNX Runtime under
    ``tolerance.text_atol`` (``None``: no check). Returns the largest embedding difference measured."""
    import onnx

    path = Path(path)
    t0 = time.perf_counter()
    vocab_src = open_clip_vocab_file()
    encoder = encoder.float().cpu().eval()
    graph = TextEncoderGraph(encoder).eval()
    cfg = encoder.config
    dummy = torch.tensor([[SOT_TOKEN, 320, 1929, EOT_TOKEN, EOT_TOKEN]], dtype=torch.long)
    proto = trace_to_onnx(graph, (dummy,), [INPUT_NAME], [OUTPUT_NAME],
                          {INPUT_NAME: {0: "texts", 1: "tokens"}, OUTPUT_NAME: {0: "texts"}}, opset)
    log(f"exported the text encoder, ONNX opset {opset} ({len(proto.graph.node)} nodes, "
        f"{time.perf_counter() - t0:.1f} s)")
    proto = simplify_and_check(proto, simplify, log)
    info = {"input": INPUT_NAME, "output": OUTPUT_NAME, "context_length": cfg.context_length,
            "sot_token": SOT_TOKEN, "eot_token": EOT_TOKEN, "embed_dim": cfg.embed_dim, "normalized": True,
            "tokenizer_vocab": VOCAB_FILE, "fingerprint": encoder.fingerprint()}
    del proto.metadata_props[:]
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(info))
    proto.producer_name = "yoloworld-sdk"
    onnx.checker.check_model(proto)
    vocab_dst = path.parent / VOCAB_FILE
    if not (vocab_dst.is_file() and vocab_dst.read_bytes() == vocab_src.read_bytes()):
        with atomic_path(vocab_dst) as tmp_vocab:
            shutil.copyfile(vocab_src, tmp_vocab)
    tokenizer = ClipTokenizer(vocab_dst, cfg.context_length)
    worst = None
    with atomic_path(path) as tmp_path:
        onnx.save(proto, str(tmp_path))
        if tolerance is not None:
            worst = verify_text_encoder(tmp_path, encoder, tokenizer, atol=tolerance.text_atol)
            log(f"check: ONNX Runtime vs PyTorch max |d embedding| {worst:.2e} over {len(CHECK_TEXTS) + 1} texts")
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {VOCAB_FILE}")
    return worst


__all__ = ["CHECK_TEXTS", "METADATA_KEY", "TextEncoderGraph", "export_text_encoder",
           "open_clip_vocab_file", "verify_text_encoder"]
