"""Cached decoding for Llama-family causal LMs in which the beams of a user share one copy of the prompt.

transformers' cache holds one copy of the prompt's keys/values per beam, repeats it K times after the
prefill and reorders (copies) all of it at every step. Here the prompt's keys/values stay (B, H_kv, S, d),
once per user, and only the few generated tokens' keys/values are kept per beam, (B*K, H_kv, t, d).
Attention of a step's query is one softmax over [prompt keys, generated keys]. The layer is written out on
the Hugging Face modules themselves (norms, projections, rotary embedding, MLP, LM head), so LoRA-wrapped
projections work unchanged; tests check the logits against the model's own forward pass and generate().
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def base_causal_lm(hf: nn.Module) -> nn.Module:
    """The transformers *ForCausalLM inside a peft wrapper (or `hf` itself)."""
    return hf.get_base_model() if hasattr(hf, "get_base_model") else hf


def supports_shared_prompt(hf: nn.Module) -> bool:
    """True for Llama-architecture models (Llama, SmolLM, ...), whose layer this module writes out."""
    base = base_causal_lm(hf)
    return getattr(base.config, "model_type", None) == "llama" and hasattr(getattr(base, "model", None), "rotary_emb")


def cache_layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) (B, H_kv, S, d) of a transformers cache (any version) or legacy tuples."""
    if hasattr(cache, "layers") and cache.layers and hasattr(cache.layers[0], "keys"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [(layer[0], layer[1]) for layer in cache]


def shared_prompt_state(cache: Any, mask: torch.Tensor, dtype: torch.dtype) -> dict:
    """Decoding state after a prefill: the prompt's keys/values once per user, its padding as an additive
    bias (B, 1, 1, S), no generated tokens yet, and each user's next position id (B,)."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias = bias.masked_fill(mask == 0, torch.finfo(dtype).min)[:, None, None, :]
    return {"prompt": [(k.contiguous(), v.contiguous()) for k, v in cache_layers(cache)], "bias": bias,
            "gen": None, "next_pos": mask.long().sum(1)}


def expand_shared_prompt(state: dict, beams: int) -> dict:
    """Give every user `beams` rows; the prompt part is not copied."""
    gen = None if state["gen"] is None else [(k.repeat_interleave(beams, 0), v.repeat_interleave(beams, 0))
                                             for k, v in state["gen"]]
    return {**state, "gen": gen, "next_pos": state["next_pos"].repeat_interleave(beams, 0)}


def _attend(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pk: torch.Tensor,
            pv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One query per row against its user's prompt and its own generated keys.

    q (R, H, 1, d) with R = B * group (a user's rows are consecutive); k, v (R, H_kv, t, d);
    pk, pv (B, H_kv, S, d); bias (B, 1, 1, S).
    Returns (R, 1, H * d)."""
    r, h, _, d = q.shape
    b, hkv, s, _ = pk.shape
    rep, group = h // hkv, r // b
    scale = getattr(attn, "scaling", d ** -0.5)
    qg = q.view(r, hkv, rep, d)
    # prompt scores: the group's queries together, (B, H_kv, group*rep, S)
    qb = qg.view(b, group, hkv, rep, d).transpose(1, 2).reshape(b, hkv, group * rep, d)
    sp = torch.matmul(qb, pk.transpose(-1, -2)) * scale + bias
    sp = sp.view(b, hkv, group, rep, s).transpose(1, 2).reshape(r, hkv, rep, s)
    sg = torch.matmul(qg, k.transpose(-1, -2)) * scale  # (R, H_kv, rep, t)
    probs = torch.softmax(torch.cat([sp, sg], -1), -1, dtype=torch.float32).to(q.dtype)
    pp, pg = probs[..., :s], probs[..., s:]
    pp = pp.view(b, group, hkv, rep, s).transpose(1, 2).reshape(b, hkv, group * rep, s)
    out = torch.matmul(pp, pv).view(b, hkv, group, rep, d).transpose(1, 2).reshape(r, hkv, rep, d)
    out = out + torch.matmul(pg, v)
    return out.reshape(r, 1, h * d)


def shared_prompt_step(hf: nn.Module, state: dict, tokens: torch.Tensor,
                       beam_idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Feed one token per new row (R,); new row i continues row `beam_idx[i]` (R,) of the state, a row of
    the same user (each user's R / B new rows consecutive). Returns the next-token logits (R, V) and the new
    state."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    base = base_causal_lm(hf)
    lm = base.model
    gen = state["gen"]
    if gen is not None:
        gen = [(k.index_select(0, beam_idx), v.index_select(0, beam_idx)) for k, v in gen]
    r = tokens.shape[0]
    x = lm.embed_tokens(tokens)[:, None, :]  # (R, 1, D)
    pos = state["next_pos"].index_select(0, beam_idx)[:, None]
    cos, sin = lm.rotary_emb(x, pos)
    new_gen = []
    for i, layer in enumerate(lm.layers):
        attn = layer.self_attn
        d = attn.head_dim
        y = layer.input_layernorm(x)
        q = attn.q_proj(y).view(r, 1, -1, d).transpose(1, 2)
        k = attn.k_proj(y).view(r, 1, -1, d).transpose(1, 2)
        v = attn.v_proj(y).view(r, 1, -1, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if gen is not None:
            k, v = torch.cat([gen[i][0], k], 2), torch.cat([gen[i][1], v], 2)
        new_gen.append((k, v))
        pk, pv = state["prompt"][i]
        x = x + attn.o_proj(_attend(attn, q, k, v, pk, pv, state["bias"]))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    logits = base.lm_head(lm.norm(x))[:, 0]
    return logits, {**state, "gen": new_gen, "next_pos": pos[:, 0] + 1}
