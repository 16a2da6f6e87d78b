"""CLIP text tower (HuggingFace ``CLIPTextModelWithProjection`` key layout) with an embedding cache.

Official YOLO-World checkpoints carry the text tower's weights under ``backbone.text_model.model.``
with HuggingFace names; open_clip checkpoints are converted by :func:`convert_open_clip_state_dict`.
Tokenisation is open_clip's BPE tokenizer (same ids as the CLIP tokenizer the official code uses).
Pooling takes the hidden state at the first end-of-text token; attention is causal, so right padding
never changes an embedding and texts are padded only to the longest one of a chunk.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..atomic import atomic_path
from .config import TextEncoderConfig

SOT_TOKEN = 49406
EOT_TOKEN = 49407
CACHE_ENV = "YOLOWORLD_CACHE_DIR"  # directory of the persistent embedding cache; "off" disables it


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer  # lazy: importing open_clip is slow

    return SimpleTokenizer()


def tokenize(texts: list[str], context_length: int = 77) -> list[list[int]]:
    """BPE ids with start/end tokens, one list per text; raises if a text exceeds the context."""
    tok = _tokenizer()
    out = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"prompts must be strings, got {type(text).__name__}: {text!r}")
        ids = [SOT_TOKEN, *tok.encode(text), EOT_TOKEN]
        if len(ids) > context_length:
            raise ValueError(f"prompt {text[:60]!r} is {len(ids)} tokens long; CLIP's context "
                             f"holds {context_length} (start and end tokens included)")
        out.append(ids)
    return out


class _Embeddings(nn.Module):
    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.context_length, cfg.width)

    def forward(self, ids: Tensor) -> Tensor:
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[1]]


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        # registration order k, v, q, out as in HuggingFace (state-dict order of official files)
        self.k_proj, self.v_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.q_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))  # (B, h, T, d)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1))


class _MLP(nn.Module):
    def __init__(self, width: int, act: str) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.quick = act == "quick_gelu"

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        x = x * torch.sigmoid(1.702 * x) if self.quick else F.gelu(x)
        return self.fc2(x)


class _Layer(nn.Module):
    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.self_attn = _Attention(cfg.width, cfg.heads)
        self.layer_norm1 = nn.LayerNorm(cfg.width)
        self.mlp = _MLP(cfg.width, cfg.act)
        self.layer_norm2 = nn.LayerNorm(cfg.width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.layers))


class _TextTransformer(nn.Module):
    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.width)


class CLIPTextEncoder(nn.Module):
    """``forward(ids) -> (N, embed_dim)`` un-normalised; ``encode(texts)`` normalised and cached."""

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.text_model = _TextTransformer(cfg)
        self.text_projection = nn.Linear(cfg.width, cfg.embed_dim, bias=False)
        self._memory: dict[str, np.ndarray] = {}
        self._fingerprint: str | None = None
        self.register_load_state_dict_post_hook(CLIPTextEncoder._forget)

    @staticmethod
    def _forget(module: CLIPTextEncoder, _incompatible: object) -> None:
        module._memory = {}
        module._fingerprint = None

    def forward(self, ids: Tensor) -> Tensor:
        """ids: int64 ``(N, T)`` right-padded; pooled at the first end-of-text token."""
        tm = self.text_model
        x = tm.embeddings(ids)
        for layer in tm.encoder.layers:
            x = layer(x)
        x = tm.final_layer_norm(x)
        eot = (ids == EOT_TOKEN).int().argmax(dim=1)  # first EOT (the official argmax rule)
        return self.text_projection(x[torch.arange(ids.shape[0]), eot])

    # ---- cached encoding ------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 of the weights (hex); the cache key's encoder part."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, t in sorted(self.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            h.update(self.config.act.encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _cache_file(self) -> Path | None:
        root = os.environ.get(CACHE_ENV, str(Path.home() / ".cache" / "yoloworld-sdk"))
        if root.lower() in ("", "0", "off", "none"):
            return None
        return Path(root) / "text_embeddings" / f"{self.fingerprint()[:32]}.npz"

    def _load_disk(self) -> dict[str, np.ndarray]:
        path = self._cache_file()
        if path is None or not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as data:
                texts, embeds = data["texts"].tolist(), data["embeds"]
            return dict(zip(texts, embeds, strict=True))
        except (OSError, ValueError, KeyError):
            return {}  # a damaged cache is rebuilt, never trusted

    def _save_disk(self, entries: dict[str, np.ndarray]) -> None:
        path = self._cache_file()
        if path is None:
            return
        texts = list(entries)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, texts=np.array(texts, dtype=str),
                     embeds=np.stack([entries[t] for t in texts]).astype(np.float32))

    @torch.no_grad()
    def encode(self, texts: list[str], chunk: int = 256) -> Tensor:
        """L2-normalised float32 ``(N, embed_dim)`` on the encoder's device; cached per text."""
        if isinstance(texts, str):
            texts = [texts]
        missing = [t for t in dict.fromkeys(texts) if t not in self._memory]
        if missing:
            self._memory.update({t: v for t, v in self._load_disk().items() if t not in self._memory})
            todo = [t for t in missing if t not in self._memory]
            if todo:
                device = self.text_projection.weight.device
                ids_all = tokenize(todo, self.config.context_length)
                for start in range(0, len(todo), chunk):
                    ids = ids_all[start:start + chunk]
                    longest = max(len(i) for i in ids)
                    batch = torch.full((len(ids), longest), EOT_TOKEN, dtype=torch.long)
                    for row, seq in enumerate(ids):
                        batch[row, : len(seq)] = torch.tensor(seq)
                    was_training = self.training
                    self.eval()
                    emb = self(batch.to(device)).float()
                    self.train(was_training)
                    emb = emb / emb.norm(dim=-1, keepdim=True)
                    for text, vec in zip(todo[start:start + chunk], emb.cpu().numpy(), strict=True):
                        self._memory[text] = vec
                self._save_disk({**self._load_disk(), **{t: self._memory[t] for t in todo}})
        if not texts:
            return torch.zeros(0, self.config.embed_dim, device=self.text_projection.weight.device)
        out = np.stack([self._memory[t] for t in texts])
        return torch.from_numpy(out).to(self.text_projection.weight.device)


def convert_open_clip_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """open_clip CLIP (text part) -> this module's HuggingFace-style names. Vision keys are dropped."""
    out: dict[str, Tensor] = {
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        # open_clip applies x @ P with P (width, embed); nn.Linear stores the transpose
        "text_projection.weight": sd["text_projection"].t().contiguous(),
    }
    n = 0
    while f"transformer.resblocks.{n}.ln_1.weight" in sd:
        src, dst = f"transformer.resblocks.{n}.", f"text_model.encoder.layers.{n}."
        weights = sd[src + "attn.in_proj_weight"].chunk(3)
        biases = sd[src + "attn.in_proj_bias"].chunk(3)
        for part, w, b in zip("qkv", weights, biases, strict=True):
            out[dst + f"self_attn.{part}_proj.weight"] = w.contiguous()
            out[dst + f"self_attn.{part}_proj.bias"] = b.contiguous()
        pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                 "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
        for old, new in pairs.items():
            out[dst + f"{new}.weight"], out[dst + f"{new}.bias"] = sd[src + f"{old}.weight"], sd[src + f"{old}.bias"]
        n += 1
    return out


def infer_text_config(sd: dict[str, Tensor], act: str = "quick_gelu") -> TextEncoderConfig:
    """Text tower shape from HuggingFace-named weights (heads = width // 64, as in all CLIPs)."""
    vocab, width = sd["text_model.embeddings.token_embedding.weight"].shape
    layers = 0
    while f"text_model.encoder.layers.{layers}.layer_norm1.weight" in sd:
        layers += 1
    return TextEncoderConfig(
        vocab_size=vocab, width=width, layers=layers, heads=max(width // 64, 1),
        context_length=sd["text_model.embeddings.position_embedding.weight"].shape[0],
        embed_dim=sd["text_projection.weight"].shape[0], act=act,  # type: ignore[arg-type]
    )


def load_text_encoder(path: str | os.PathLike, act: str = "quick_gelu") -> CLIPTextEncoder:
    """A text encoder from an open_clip checkpoint (or a state dict with HuggingFace names)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    if "token_embedding.weight" in sd:
        sd = convert_open_clip_state_dict(sd)
    if "text_model.embeddings.token_embedding.weight" not in sd:
        raise ValueError(f"{path}: neither open_clip nor HuggingFace CLIP text weights")
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    enc = CLIPTextEncoder(infer_text_config(sd, act))
    enc.load_state_dict(sd, strict=True)
    return enc.eval()
