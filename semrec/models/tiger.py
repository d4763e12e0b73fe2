"""TIGER: a T5 encoder-decoder trained from scratch that reads the history's item codes and writes the
target item's codes (Rajput et al., NeurIPS 2023).

Encoder input: [hashed user token] + the codes of the last `max_history` history items, concatenated
(item padding dropped, right-padded). Decoder: a start token, then the target's codes.
Model vocabulary: the tokenization's ids, then one start token, then `user_buckets` user tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from semrec.models.base import GenerativeRecommender, reorder_cache, repeat_cache
from semrec.models.batching import Batch, hash_users, history_tokens


@dataclass
class TigerConfig:
    """TIGER's published sizes by default (4+4 layers, d_model 128, 6 heads, d_kv 64, d_ff 1024)."""

    num_layers: int = 4
    num_decoder_layers: int = 4
    d_model: int = 128
    num_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    dropout: float = 0.1
    feed_forward_proj: str = "relu"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    max_history: int = 20  # history items read (the most recent ones)
    user_buckets: int = 0  # 0: no user token; else the user id is hashed into this many tokens

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_decoder_layers", "d_model", "num_heads", "d_kv", "d_ff", "max_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.user_buckets < 0:
            raise ValueError("user_buckets must be >= 0")


class TigerRecommender(GenerativeRecommender):
    arch = "tiger"
    config_class = TigerConfig
    is_encoder_decoder = True
    source_padding_side = "right"

    def _build_hf(self) -> nn.Module:
        from transformers import T5Config, T5ForConditionalGeneration

        c = self.config
        vocab = self.extra_base + c.user_buckets
        hf_cfg = T5Config(
            vocab_size=vocab, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff, num_layers=c.num_layers,
            num_decoder_layers=c.num_decoder_layers, num_heads=c.num_heads, dropout_rate=c.dropout,
            feed_forward_proj=c.feed_forward_proj, relative_attention_num_buckets=c.relative_attention_num_buckets,
            relative_attention_max_distance=c.relative_attention_max_distance,
            pad_token_id=self.pad_id, eos_token_id=self.eos_id, decoder_start_token_id=self.start_id,
            is_encoder_decoder=True, use_cache=True, tie_word_embeddings=True,
        )
        model = T5ForConditionalGeneration(hf_cfg)
        model.generation_config.eos_token_id = self.eos_id
        model.generation_config.pad_token_id = self.pad_id
        model.generation_config.decoder_start_token_id = self.start_id
        return model

    def source_tokens(self, histories: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = history_tokens(self._codes_cpu, self.pad_id, histories.cpu(), side="right")
        if self.config.user_buckets:
            user_tok = self.extra_base + hash_users(users.cpu(), self.config.user_buckets)
            tokens = torch.cat([user_tok[:, None], tokens], 1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        return tokens, mask

    def _decoder_inputs(self, target_tokens: torch.Tensor) -> torch.Tensor:
        start = target_tokens.new_full((target_tokens.shape[0], 1), self.start_id)
        return torch.cat([start, target_tokens[:, :-1]], 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        out = self.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      decoder_input_ids=self._decoder_inputs(batch.target_tokens), use_cache=False, return_dict=True)
        return out.logits

    def prefill(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        enc = self.hf.get_encoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask, return_dict=True)
        start = batch.input_ids.new_full((len(batch), 1), self.start_id)
        out = self.hf(encoder_outputs=enc, attention_mask=batch.attention_mask, decoder_input_ids=start,
                      use_cache=True, return_dict=True)
        state = {"enc": enc, "mask": batch.attention_mask, "cache": out.past_key_values}
        return out.logits[:, -1], state

    def expand_state(self, state: dict, beams: int) -> dict:
        enc = state["enc"]
        enc.last_hidden_state = enc.last_hidden_state.repeat_interleave(beams, 0)
        return {"enc": enc, "mask": state["mask"].repeat_interleave(beams, 0),
                "cache": repeat_cache(state["cache"], beams)}

    def step(self, state: dict, tokens: torch.Tensor, beam_idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        # Beams of one user share the encoder input, so only the decoder self-attention cache is reordered.
        cache = reorder_cache(state["cache"], beam_idx, self_attention_only=True)
        out = self.hf(encoder_outputs=state["enc"], attention_mask=state["mask"], decoder_input_ids=tokens[:, None],
                      past_key_values=cache, use_cache=True, return_dict=True)
        state["cache"] = out.past_key_values
        return out.logits[:, -1], state
