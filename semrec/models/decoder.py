"""Decoder-only generative recommender: a Hugging Face causal LM that reads a prompt built from the
history and then generates the target item's tokens.

`DecoderRecommender` builds a small Llama- or GPT-2-style model from scratch over semantic IDs: the
prompt is [start] + [hashed user token] + the codes of the last `max_history` history items, left-padded
so that every row's target starts at the same column. The teacher-forcing, prefill and cached decoding
steps below only use `self.hf`, `source_tokens` and `pad_id`, so a title-token LLM recommender can
subclass it and override `_build_hf` (load a local checkpoint) and `source_tokens` (a text prompt).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from semrec.models.base import GenerativeRecommender, register_model, reorder_cache, repeat_cache
from semrec.models.batching import Batch, compact, hash_users, history_tokens
from semrec.models.shared_prompt import (base_causal_lm, expand_shared_prompt, shared_prompt_state,
                                         shared_prompt_step, supports_shared_prompt)


@dataclass
class DecoderConfig:
    """A small causal LM over item codes. `style` picks the Hugging Face architecture."""

    style: Literal["llama", "gpt2"] = "llama"
    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    num_kv_heads: int = 0  # llama only; 0 means num_heads
    d_ff: int = 512
    dropout: float = 0.1
    max_history: int = 20
    user_buckets: int = 0
    tie_embeddings: bool = True
    # "every": also learn each history item's codes from what precedes them, in the same pass (GRID's loss
    # on every item: a causal model learns every next item of a sequence at once); "last": the target only
    item_loss: Literal["last", "every"] = "last"

    def __post_init__(self) -> None:
        for name in ("num_layers", "d_model", "num_heads", "d_ff", "max_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.d_model % self.num_heads:
            raise ValueError("d_model must be divisible by num_heads")
        if self.num_kv_heads and self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be divisible by num_kv_heads")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, T) of a left-padded attention mask: 0 at the first real token."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)


@register_model
class DecoderRecommender(GenerativeRecommender):
    arch = "decoder"
    config_class = DecoderConfig
    is_encoder_decoder = False
    source_padding_side = "left"

    @property
    def learns_every_item(self) -> bool:
        return getattr(self.config, "item_loss", "last") == "every"

    @property
    def state_is_reusable(self) -> bool:
        # the shared-prompt step gathers new tensors; transformers' cache objects are updated in place
        return supports_shared_prompt(self.hf)

    def _max_positions(self) -> int:
        c = self.config
        return 2 + (c.max_history + 1) * self.max_target_len + 8

    def _build_hf(self) -> nn.Module:
        c = self.config
        vocab = self.extra_base + c.user_buckets
        common = dict(vocab_size=vocab, pad_token_id=self.pad_id, bos_token_id=self.start_id,
                      eos_token_id=self.eos_id, tie_word_embeddings=c.tie_embeddings, use_cache=True)
        if c.style == "llama":
            from transformers import LlamaConfig, LlamaForCausalLM

            hf_cfg = LlamaConfig(hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.num_layers,
                                 num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads or c.num_heads,
                                 max_position_embeddings=self._max_positions(), attention_dropout=c.dropout,
                                 **common)
            model = LlamaForCausalLM(hf_cfg)
        else:
            from transformers import GPT2Config, GPT2LMHeadModel

            hf_cfg = GPT2Config(n_embd=c.d_model, n_inner=c.d_ff, n_layer=c.num_layers, n_head=c.num_heads,
                                n_positions=self._max_positions(), resid_pdrop=c.dropout, embd_pdrop=c.dropout,
                                attn_pdrop=c.dropout, **common)
            model = GPT2LMHeadModel(hf_cfg)
        model.generation_config.eos_token_id = self.eos_id
        model.generation_config.pad_token_id = self.pad_id
        model.generation_config.bos_token_id = self.start_id
        return model

    def source_tokens(self, histories: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hist, hmask = history_tokens(self._codes_cpu, self.pad_id, histories.cpu(), side="left")
        head = [torch.full((len(users), 1), self.start_id, dtype=torch.long)]
        if self.config.user_buckets:
            head.append((self.extra_base + hash_users(users.cpu(), self.config.user_buckets))[:, None])
        head = torch.cat(head, 1)
        # [pads..., start, user, history codes]: move the left padding of the history in front of the head
        tokens = torch.cat([head, hist], 1)
        mask = torch.cat([torch.ones_like(head), hmask], 1)
        tokens, keep = compact(tokens, mask.bool(), side="left")
        return tokens.masked_fill(~keep, self.pad_id), keep.long()

    # ----- forward passes ----------------------------------------------------------------------
    def _forward_params(self) -> frozenset[str]:
        """Keyword names of the causal LM's forward (they differ across transformers versions)."""
        if not hasattr(self, "_fwd_params"):
            self._fwd_params = frozenset(inspect.signature(base_causal_lm(self.hf).forward).parameters)
        return self._fwd_params

    def _keep_kwarg(self, n: int) -> dict:
        name = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in self._forward_params()), None)
        return {name: n} if name else {}

    def _cache_kwarg(self, cache) -> dict:
        return {"cache" if "cache" in self._forward_params() else "past_key_values": cache}

    @staticmethod
    def _out_cache(out):
        """The cache a forward returned (`cache` in recent transformers, `past_key_values` before)."""
        return out["cache"] if "cache" in out else out.past_key_values

    def forward(self, batch: Batch) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Target logits (B, L, V). In training with `item_loss: every`, also the mean next-token loss
        over the prompt's history codes (a scalar), from the same pass: returns (logits, history_loss)."""
        tgt = batch.target_tokens
        length = tgt.shape[1]
        tin = tgt[:, :-1]
        tmask = tin != self.pad_id
        ids = torch.cat([batch.input_ids, tin.masked_fill(~tmask, self.pad_id)], 1)
        mask = torch.cat([batch.attention_mask, tmask.long()], 1)
        every = self.training and getattr(self.config, "item_loss", "last") == "every"
        out = self.hf(**self._token_inputs(ids, batch.histories), attention_mask=mask,
                      position_ids=positions_from_mask(mask), use_cache=False, return_dict=True,
                      **({} if every else self._keep_kwarg(length)))
        if not every:
            return out.logits[:, -length:]
        return out.logits[:, -length:], self._history_loss(out.logits, batch.input_ids)

    def _history_loss(self, logits: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of each history code token of the prompt (B, S) given the tokens before it."""
        s = prompt.shape[1]
        nxt = prompt[:, 1:]
        is_code = (nxt < self.item_vocab_size) & (nxt != self.pad_id) & (nxt != self.start_id)
        if not bool(is_code.any()):
            return logits.new_zeros(())
        return torch.nn.functional.cross_entropy(logits[:, :s - 1][is_code].float(), nxt[is_code])

    def _token_inputs(self, ids: torch.Tensor, histories: torch.Tensor) -> dict:
        """Token ids (B, S) as model inputs: input_ids here; a subclass may pass inputs_embeds instead."""
        return {"input_ids": ids}

    def _source_inputs(self, batch: Batch) -> dict:
        """The prompt as model inputs."""
        return self._token_inputs(batch.input_ids, batch.histories)

    def prefill(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        mask = batch.attention_mask
        out = self.hf(**self._source_inputs(batch), attention_mask=mask, position_ids=positions_from_mask(mask),
                      use_cache=True, return_dict=True, **self._keep_kwarg(1))
        logits = out.logits[:, -1]
        if supports_shared_prompt(self.hf):
            return logits, shared_prompt_state(self._out_cache(out), mask, logits.dtype)
        return logits, {"cache": self._out_cache(out), "mask": mask, "next_pos": mask.long().sum(1)}

    def expand_state(self, state: dict, beams: int) -> dict:
        if "prompt" in state:
            return expand_shared_prompt(state, beams)
        return {"cache": repeat_cache(state["cache"], beams), "mask": state["mask"].repeat_interleave(beams, 0),
                "next_pos": state["next_pos"].repeat_interleave(beams, 0)}

    def step(self, state: dict, tokens: torch.Tensor, beam_idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if "prompt" in state:  # Llama family: the beams of a user share one copy of the prompt's keys/values
            return shared_prompt_step(self.hf, state, tokens, beam_idx)
        # Other architectures: transformers' cache, one copy per beam
        cache = reorder_cache(state["cache"], beam_idx)
        mask = state["mask"].index_select(0, beam_idx)
        mask = torch.cat([mask, mask.new_ones((len(tokens), 1))], 1)
        pos = state["next_pos"].index_select(0, beam_idx)
        out = self.hf(input_ids=tokens[:, None], attention_mask=mask, position_ids=pos[:, None],
                      use_cache=True, return_dict=True, **self._cache_kwarg(cache))
        return out.logits[:, -1], {"cache": self._out_cache(out), "mask": mask, "next_pos": pos + 1}
