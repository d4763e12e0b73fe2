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

from semrec.models.base import GenerativeRecommender, register_model
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


@register_model
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

    # ----- cached decoding ------------------------------------------------------------------------
    # The decoder step is written out on the HF modules' weights so that the beams of a user share one copy
    # of the cross-attention keys/values: their queries are grouped as (B, H, beams, d) against (B, H, S, d).
    # transformers' generate() instead repeats (and reorders every step) that cache once per beam. The
    # tests check these logits against the HF forward pass and generate().
    def prefill(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        enc = self.hf.get_encoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                    return_dict=True).last_hidden_state
        b, s, _ = enc.shape
        cross = []
        for blk in self.hf.decoder.block:
            att = blk.layer[1].EncDecAttention
            k, v = (proj(enc).view(b, s, att.n_heads, att.key_value_proj_dim) for proj in (att.k, att.v))
            # stored as the matmuls read them, (B, H, d, S) and (B, H, S, d), so no step copies them again
            cross.append((k.permute(0, 2, 3, 1).contiguous(), v.transpose(1, 2).contiguous()))
        bias = torch.zeros((b, 1, 1, s), dtype=enc.dtype, device=enc.device)
        bias = bias.masked_fill(batch.attention_mask[:, None, None, :] == 0, torch.finfo(enc.dtype).min)
        state = {"cross": cross, "bias": bias, "self": None, "t": 0, "group": 1}
        start = batch.input_ids.new_full((b,), self.start_id)
        return self._decode_step(start, state)

    def expand_state(self, state: dict, beams: int) -> dict:
        selfkv = [(k.repeat_interleave(beams, 0), v.repeat_interleave(beams, 0)) for k, v in state["self"]]
        return {**state, "self": selfkv, "group": state["group"] * beams}

    def step(self, state: dict, tokens: torch.Tensor, beam_idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        state = {**state, "self": [(k.index_select(0, beam_idx), v.index_select(0, beam_idx))
                                   for k, v in state["self"]]}
        return self._decode_step(tokens, state)

    def _self_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """(1, H, 1, length): T5's relative position bias of the query at position length-1."""
        att = self.hf.decoder.block[0].layer[0].SelfAttention
        rel = torch.arange(length, device=device) - (length - 1)
        bucket = att._relative_position_bucket(rel, bidirectional=False,
                                               num_buckets=att.relative_attention_num_buckets,
                                               max_distance=att.relative_attention_max_distance)
        return att.relative_attention_bias(bucket).t()[None, :, None, :]

    @staticmethod
    def _attend(q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """q (.., H, Q, d), kt keys transposed (.., H, d, S), v (.., H, S, d), bias broadcastable to scores."""
        scores = torch.matmul(q, kt) + bias  # T5: no 1/sqrt(d) scaling
        return torch.matmul(torch.softmax(scores.float(), -1).type_as(scores), v)

    def _decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        dec = self.hf.decoder
        r, g, t = tokens.shape[0], state["group"], state["t"]
        b = r // g
        x = dec.embed_tokens(tokens)[:, None, :]  # (R, 1, D)
        pos_bias = self._self_bias(t + 1, x.device)
        new_self = []
        for i, blk in enumerate(dec.block):
            sa, ca = blk.layer[0], blk.layer[1]
            att = sa.SelfAttention
            h, d = att.n_heads, att.key_value_proj_dim
            y = sa.layer_norm(x)
            q, k, v = (proj(y).view(r, 1, h, d).transpose(1, 2) for proj in (att.q, att.k, att.v))
            if state["self"] is not None:
                k = torch.cat([state["self"][i][0], k], 2)
                v = torch.cat([state["self"][i][1], v], 2)
            new_self.append((k, v))
            x = x + att.o(self._attend(q, k.transpose(-1, -2), v, pos_bias).transpose(1, 2).reshape(r, 1, h * d))
            att = ca.EncDecAttention
            q = att.q(ca.layer_norm(x)).view(b, g, h, d).transpose(1, 2)  # (B, H, beams, d)
            ck, cv = state["cross"][i]
            out = self._attend(q, ck, cv, state["bias"])  # (B, H, beams, d)
            x = x + att.o(out.transpose(1, 2).reshape(r, 1, h * d))
            x = blk.layer[2](x)
        x = dec.final_layer_norm(x)
        if getattr(self.hf.config, "scale_decoder_outputs", self.hf.config.tie_word_embeddings):
            x = x * (self.hf.model_dim ** -0.5)
        logits = self.hf.lm_head(x)[:, 0]
        return logits, {**state, "self": new_self, "t": t + 1}
