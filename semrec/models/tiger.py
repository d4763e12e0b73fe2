"""TIGER: a T5 encoder-decoder trained from scratch that reads the history's item codes and writes the
target item's codes (Rajput et al., NeurIPS 2023).

Encoder input: [hashed user token] + the codes of the last `max_history` history items, concatenated
(item padding dropped, right-padded), each item optionally closed by a separator token (GRID) and the
whole input optionally closed by an anchor token. With `item_positions`, a learned embedding of each
token's item recency (0 = the anchor or the most recent item) is added to its token embedding: T5's
cross-attention has no position information, so without it the decoder cannot tell recent items from
old ones. With `item_embeddings`, a learned embedding of each history item's id is added too (the
item-level identity that codes shared across items cannot hold). Decoder: a start token, then the target's
codes. With `edge_head`, each next-token logit also gets the dot product of the decoder state with a learned
vector of that trie edge (`semrec.models.edge_head`): output vectors of each prefix's own, not shared across
parents.
Model vocabulary: the tokenization's ids, then one start token (unless the tokenization has a BOS), then
`user_buckets` user tokens, then the separator and the anchor token when enabled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from semrec.models.base import GenerativeRecommender, register_model
from semrec.models.batching import Batch, compact, hash_users, history_tokens
from semrec.models.edge_head import edge_logits, teacher_forced_edge_logits
from semrec.trie import PrefixIndex

# Token rows the decoding passes work on at a time, so that their (rows, d_ff) and (rows, 3 x heads x d_kv)
# activations stay in a CPU's caches, whatever the number of users per call (256 users x 40 tokens spill them)
CACHE_ROWS = 1024


@dataclass
class TigerConfig:
    """TIGER's published sizes by default (4+4 layers, d_model 128, 6 heads, d_kv 64, d_ff 1024).

    The input and regularisation defaults are the winners of recipes/office/tiger_ablation_cpu.yaml
    (benchmarks/results/office_tiger_ablation_cpu.md): item-recency embeddings with an anchor token and
    dropout 0; separators, a user token, an untied head and a smaller initialisation did not help there."""

    num_layers: int = 4
    num_decoder_layers: int = 4
    d_model: int = 128
    num_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    dropout: float = 0.0
    feed_forward_proj: str = "relu"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    max_history: int = 20  # history items read (the most recent ones)
    user_buckets: int = 0  # 0: no user token; else the user id is hashed into this many tokens
    item_positions: bool = True  # add a learned item-recency embedding to the encoder's input tokens
    item_separator: bool = False  # a separator token after each history item
    eos_anchor: bool = True  # an anchor token closing the encoder input
    tie_embeddings: bool = True  # False: an output head of its own (code levels have disjoint token rows)
    embedding_init_std: float = 1.0  # std of the initial token embeddings (T5's default is 1.0)
    item_embeddings: bool = False  # add a learned embedding of each history item's id to its input tokens
    # add a learned output vector per trie edge (prefix, next token) to the logits; off: it narrowed the lists of
    # TIGER alone and left TIGER+TCA level (benchmarks/results/{toys,sports}_tiger{,_tca}_msl_edge_long_cpu.md)
    edge_head: bool = False

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_decoder_layers", "d_model", "num_heads", "d_kv", "d_ff", "max_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.user_buckets < 0:
            raise ValueError("user_buckets must be >= 0")
        if self.embedding_init_std <= 0:
            raise ValueError("embedding_init_std must be > 0")

    # Values of the options added after the first release, as models saved before them were built.
    legacy_defaults = {"item_positions": False, "item_separator": False, "eos_anchor": False,
                       "tie_embeddings": True, "embedding_init_std": 1.0, "item_embeddings": False,
                       "edge_head": False}
    # Options added after models were cached, at the value that builds the model as before: left out of a
    # recipe stage's key at that value, so the stages cached before them stay valid.
    stage_key_omits = {"item_embeddings": False, "edge_head": False}


@register_model
class TigerRecommender(GenerativeRecommender):
    arch = "tiger"
    config_class = TigerConfig
    is_encoder_decoder = True
    source_padding_side = "right"

    @property
    def state_is_reusable(self) -> bool:
        return True  # `step` gathers new key/value tensors and returns a new state dict

    @property
    def separator_id(self) -> int | None:
        return self.extra_base + self.config.user_buckets if self.config.item_separator else None

    @property
    def anchor_id(self) -> int | None:
        c = self.config
        return self.extra_base + c.user_buckets + int(c.item_separator) if c.eos_anchor else None

    def _build_hf(self) -> nn.Module:
        from transformers import T5Config, T5ForConditionalGeneration

        c = self.config
        if ((c.item_positions or c.item_embeddings) and not c.item_separator and self.eos_id is None
                and self._level0_range() is None):
            raise ValueError("tiger: item_positions and item_embeddings need item_separator with this item "
                             "tokenization (neither an EOS token nor its first code level marks where an item starts)")
        vocab = self.extra_base + c.user_buckets + int(c.item_separator) + int(c.eos_anchor)
        hf_cfg = T5Config(
            vocab_size=vocab, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff, num_layers=c.num_layers,
            num_decoder_layers=c.num_decoder_layers, num_heads=c.num_heads, dropout_rate=c.dropout,
            feed_forward_proj=c.feed_forward_proj, relative_attention_num_buckets=c.relative_attention_num_buckets,
            relative_attention_max_distance=c.relative_attention_max_distance,
            pad_token_id=self.pad_id, eos_token_id=self.eos_id, decoder_start_token_id=self.start_id,
            is_encoder_decoder=True, use_cache=True, tie_word_embeddings=c.tie_embeddings,
        )
        model = T5ForConditionalGeneration(hf_cfg)
        if not c.tie_embeddings:
            # transformers 5 ties T5's head whatever the config says (tie_word_embeddings=False above only
            # drops the d_model**-0.5 output scaling, in every version), so the head is replaced here;
            # its initial std keeps the first logits O(1) without that scaling
            model.config.tie_word_embeddings = False
            model.lm_head = nn.Linear(c.d_model, vocab, bias=False)
            nn.init.normal_(model.lm_head.weight, 0.0, c.d_model ** -0.5)
        if c.embedding_init_std != 1.0:
            with torch.no_grad():
                model.shared.weight.normal_(0.0, c.embedding_init_std)
        if c.item_positions:  # held by the encoder so that it is saved and loaded with the HF weights
            # slots 0..max_history: recency (the anchor takes 0 when enabled); the last slot: the user token
            model.encoder.item_position = nn.Embedding(c.max_history + 2, c.d_model)
            nn.init.normal_(model.encoder.item_position.weight, 0.0, c.embedding_init_std)
        if c.item_embeddings:  # one row per catalogue item, then a row for the other tokens
            # zeros: the model starts as it would without them, and a rarely seen item adds no noise
            model.encoder.item_embedding = nn.Embedding(self.codes.shape[0] + 1, c.d_model,
                                                        padding_idx=self.codes.shape[0])
            nn.init.zeros_(model.encoder.item_embedding.weight)
        if c.edge_head:  # one row per edge of the catalogue's trie (its edge table's order); zeros as above
            edges = PrefixIndex(self.codes.cpu(), pad_id=self.pad_id, vocab_size=vocab).num_edges
            model.decoder.edge_vectors = nn.Embedding(edges, c.d_model)
            nn.init.zeros_(model.decoder.edge_vectors.weight)
        model.generation_config.eos_token_id = self.eos_id
        model.generation_config.pad_token_id = self.pad_id
        model.generation_config.decoder_start_token_id = self.start_id
        return model

    def _level0_range(self) -> tuple[int, int] | None:
        """Token ids [lo, hi) of the first code level, when they differ from the other levels' ids."""
        offsets = list(getattr(self.tokenization, "level_offsets", []) or [])
        sizes = list(getattr(self.tokenization, "codebook_sizes", []) or [])
        if len(offsets) < 2 or len(set(offsets)) < len(offsets):
            return None
        return offsets[0], offsets[0] + sizes[0]

    def source_tokens(self, histories: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        codes, hist = self._codes_cpu, histories.cpu()
        if c.item_separator:
            codes = torch.cat([codes, codes.new_full((codes.shape[0], 1), self.separator_id)], 1)
        if c.eos_anchor:  # the anchor is one more "item" after the most recent one
            anchor = codes.new_full((1, codes.shape[1]), self.pad_id)
            anchor[0, 0] = self.anchor_id
            codes = torch.cat([codes, anchor])
            hist = torch.cat([hist, hist.new_full((hist.shape[0], 1), codes.shape[0] - 1)], 1)
        tokens, mask = history_tokens(codes, self.pad_id, hist, side="right")
        if c.user_buckets:
            user_tok = self.extra_base + hash_users(users.cpu(), c.user_buckets)
            tokens = torch.cat([user_tok[:, None], tokens], 1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        return tokens, mask

    def item_recency(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, S) recency slot of each encoder token: 0 for the anchor (or the most recent item without
        one), k for the k-th item back, max_history + 1 for the user token; padding gets 0.

        An item starts at its first code level's token, or after the previous item's separator or EOS."""
        c = self.config
        item = attention_mask > 0
        if c.user_buckets:
            item[:, 0] = False
        if c.eos_anchor:
            item = item & (input_ids != self.anchor_id)
        delim = self.separator_id if c.item_separator else self.eos_id
        if delim is not None:
            after_delim = torch.cat([torch.ones_like(item[:, :1]), input_ids[:, :-1] == delim], 1)
            after_other = torch.cat([torch.ones_like(item[:, :1]), ~item[:, :-1]], 1)
            starts = item & (after_delim | after_other)
        else:
            lo, hi = self._level0_range()
            starts = item & (input_ids >= lo) & (input_ids < hi)
        count = starts.long().cumsum(1)  # 1-based index of the item a token belongs to
        rec = starts.long().sum(1, keepdim=True) - count + int(c.eos_anchor)
        if c.eos_anchor:
            rec = rec.masked_fill(input_ids == self.anchor_id, 0)
        if c.user_buckets:
            rec[:, 0] = c.max_history + 1
        return rec.clamp(0, c.max_history + 1).masked_fill(attention_mask == 0, 0)

    def token_items(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    histories: torch.Tensor) -> torch.Tensor:
        """(B, S) the catalogue id of the history item each encoder token belongs to, N (the number of items)
        for the anchor, the user token and padding. histories: (B, H) item ids, -1 = none, the most recent
        last (`Batch.histories`); like the encoder input, the items are read with their padding dropped."""
        c, n = self.config, self.codes.shape[0]
        hist, keep = compact(histories.to(input_ids.device), histories >= 0, side="left")
        if hist.shape[1] == 0:  # no history item in the batch
            return torch.full_like(input_ids, n)
        rec = self.item_recency(input_ids, attention_mask)  # anchor 0, items 1.. back; user token max_history + 1
        back = rec - int(c.eos_anchor)  # 0 = the most recent item; -1 = the anchor
        is_item = (attention_mask > 0) & (back >= 0) & (rec <= c.max_history)
        col = (hist.shape[1] - 1 - back).clamp(0, hist.shape[1] - 1)
        return torch.where(is_item, hist.masked_fill(~keep, n).gather(1, col), n)

    def _encoder_inputs(self, batch: Batch) -> dict:
        c = self.config
        if not (c.item_positions or c.item_embeddings):
            return {"input_ids": batch.input_ids}
        emb = self.hf.shared(batch.input_ids)
        if c.item_positions:
            emb = emb + self.hf.encoder.item_position(self.item_recency(batch.input_ids, batch.attention_mask))
        if c.item_embeddings:
            emb = emb + self.hf.encoder.item_embedding(
                self.token_items(batch.input_ids, batch.attention_mask, batch.histories))
        return {"inputs_embeds": emb}

    def _decoder_inputs(self, target_tokens: torch.Tensor) -> torch.Tensor:
        start = target_tokens.new_full((target_tokens.shape[0], 1), self.start_id)
        return torch.cat([start, target_tokens[:, :-1]], 1)

    @property
    def _output_scale(self) -> float:
        """The factor on the decoder's final states before the output layer (T5 scales them when tied)."""
        scaled = getattr(self.hf.config, "scale_decoder_outputs", self.hf.config.tie_word_embeddings)
        return self.hf.model_dim ** -0.5 if scaled else 1.0

    def forward(self, batch: Batch) -> torch.Tensor:
        out = self.hf(**self._encoder_inputs(batch), attention_mask=batch.attention_mask,
                      decoder_input_ids=self._decoder_inputs(batch.target_tokens), use_cache=False, return_dict=True,
                      output_hidden_states=self.config.edge_head)
        if not self.config.edge_head:
            return out.logits
        hidden = out.decoder_hidden_states[-1] * self._output_scale  # what the output layer read
        return out.logits + teacher_forced_edge_logits(self.prefix_index(), hidden, batch.target_tokens,
                                                       self.hf.decoder.edge_vectors.weight)

    # ----- cached decoding ------------------------------------------------------------------------
    # The decoder step is written out on the HF modules' weights so that the beams of a user share one copy
    # of the cross-attention keys/values: their queries are grouped as (B, H, beams, d) against (B, H, S, d).
    # transformers' generate() instead repeats (and reorders every step) that cache once per beam. The
    # encoder pass is written out too (`_encode`: benchmarks/results/decoding_speed.md). The tests check
    # these logits against the HF forward pass and generate().
    def prefill(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        mask_bias = self._mask_bias(batch.attention_mask)
        inputs = self._encoder_inputs(batch)
        x = inputs["inputs_embeds"] if "inputs_embeds" in inputs else self.hf.shared(inputs["input_ids"])
        b, s, _ = x.shape
        users = max(1, CACHE_ROWS // s)  # the encoder a few users at a time: its activations stay in cache
        parts = [self._cross_keys_values(self._encode(x[lo:lo + users], mask_bias[lo:lo + users]))
                 for lo in range(0, b, users)]
        cross = [tuple(_cat([p[i][j] for p in parts]) for j in (0, 1)) for i in range(len(parts[0]))]
        state = {"cross": cross, "bias": mask_bias, "self": None, "t": 0}
        if self.config.edge_head:  # each row's prefix as a trie range
            state["lo"], state["hi"] = self.prefix_index().root(b)
        start = batch.input_ids.new_full((b,), self.start_id)
        return self._decode_step(start, state)

    def _mask_bias(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, S) float32 additive attention bias: 0 on source tokens, the float32 minimum on padding."""
        bias = torch.zeros(attention_mask.shape, dtype=torch.float32, device=attention_mask.device)
        return bias.masked_fill(attention_mask == 0, torch.finfo(torch.float32).min)[:, None, None, :]

    def _encode(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        """Source embeddings (B, S, D) -> T5 encoder states (B, S, D) at inference (no dropout), written out on
        the HF modules' weights: one q/k/v projection per layer, the relative position bias plus padding built
        once for all layers, the feed-forward's ReLU in place and, under bf16 autocast, no float32 copy of its
        hidden layer."""
        enc = self.hf.encoder
        b, s, _ = x.shape
        bias = enc.block[0].layer[0].SelfAttention.compute_bias(s, s, device=x.device) + mask_bias  # (B, H, S, S)
        for blk in enc.block:
            sa = blk.layer[0]
            att = sa.SelfAttention
            h, d = att.n_heads, att.key_value_proj_dim
            qkv = nn.functional.linear(sa.layer_norm(x), torch.cat([att.q.weight, att.k.weight, att.v.weight]))
            q, k, v = qkv.view(b, s, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, S, d)
            out = self._attend(q, k.transpose(-1, -2), v, bias)
            x = x + att.o(out.transpose(1, 2).reshape(b, s, h * d))
            x = _feed_forward(blk.layer[1], x)
        return enc.final_layer_norm(x)

    def _cross_keys_values(self, enc: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys (B, H, d, S) and values (B, H, S, d) of encoder states
        (B, S, D): stored as the matmuls read them, so no decoding step copies them again."""
        b, s, _ = enc.shape
        out = []
        for blk in self.hf.decoder.block:
            att = blk.layer[1].EncDecAttention
            k, v = (proj(enc).view(b, s, att.n_heads, att.key_value_proj_dim) for proj in (att.k, att.v))
            out.append((k.permute(0, 2, 3, 1).contiguous(), v.transpose(1, 2).contiguous()))
        return out

    def expand_state(self, state: dict, beams: int) -> dict:
        selfkv = [(k.repeat_interleave(beams, 1), v.repeat_interleave(beams, 1)) for k, v in state["self"]]
        ranges = {k: state[k].repeat_interleave(beams) for k in ("lo", "hi") if k in state}
        return {**state, "self": selfkv, **ranges}

    def step(self, state: dict, tokens: torch.Tensor, beam_idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self._decode_step(tokens, state, beam_idx)

    def _self_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """(length, 1, H): T5's relative position bias of the query at position length-1."""
        att = self.hf.decoder.block[0].layer[0].SelfAttention
        rel = torch.arange(length, device=device) - (length - 1)
        bucket = att._relative_position_bucket(rel, bidirectional=False,
                                               num_buckets=att.relative_attention_num_buckets,
                                               max_distance=att.relative_attention_max_distance)
        return att.relative_attention_bias(bucket)[:, None, :]

    @staticmethod
    def _attend(q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """q (.., H, Q, d), kt keys transposed (.., H, d, S), v (.., H, S, d), bias broadcastable to scores."""
        scores = torch.matmul(q, kt) + bias  # T5: no 1/sqrt(d) scaling
        return torch.matmul(torch.softmax(scores.float(), -1).to(v.dtype), v)

    @staticmethod
    def _attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """One query per row: q (R, H, d), k and v (L, R, H, d), bias (L, 1, H) -> (R, H, d). Broadcast products
        and sums: R*H matmuls of 1 x L are too small for a batched matmul to pay off."""
        probs = torch.softmax(((q * k).sum(-1) + bias).float(), 0).to(v.dtype)  # (L, R, H); under autocast bf16
        return (probs[..., None] * v).sum(0)

    @staticmethod
    def _append(past: torch.Tensor | None, new: torch.Tensor, beam_idx: torch.Tensor | None) -> torch.Tensor:
        """Self-attention keys or values (L, R, H, d) of the beams' parents (`beam_idx` (R,), rows of `past`)
        followed by this step's `new` (R, H, d): one copy of the past, slot by slot."""
        if past is None:
            return new[None]
        out = past.new_empty((past.shape[0] + 1, *new.shape))
        torch.index_select(past, 1, beam_idx, out=out[:-1])
        out[-1] = new
        return out

    def _decode_step(self, tokens: torch.Tensor, state: dict,
                     beam_idx: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The next logits (R, V) for `tokens` (R,) fed to the beams whose parents are rows `beam_idx` of the
        state (None: the first step). Self-attention keys/values are kept slot-major, (L, R, H, d)."""
        dec = self.hf.decoder
        r, b, t = tokens.shape[0], state["bias"].shape[0], state["t"]
        g = r // b  # rows per user (beams), consecutive
        x = dec.embed_tokens(tokens)[:, None, :]  # (R, 1, D)
        pos_bias = self._self_bias(t + 1, x.device)
        new_self = []
        for i, blk in enumerate(dec.block):
            sa, ca = blk.layer[0], blk.layer[1]
            att = sa.SelfAttention
            h, d = att.n_heads, att.key_value_proj_dim
            y = sa.layer_norm(x)
            q, k, v = (proj(y).view(r, h, d) for proj in (att.q, att.k, att.v))
            past = state["self"][i] if state["self"] is not None else (None, None)
            k, v = self._append(past[0], k, beam_idx), self._append(past[1], v, beam_idx)
            new_self.append((k, v))
            x = x + att.o(self._attend_one(q, k, v, pos_bias).reshape(r, 1, h * d))
            att = ca.EncDecAttention
            q = att.q(ca.layer_norm(x)).view(b, g, h, d).transpose(1, 2)  # (B, H, beams, d)
            ck, cv = state["cross"][i]
            out = self._attend(q, ck, cv, state["bias"])  # (B, H, beams, d)
            x = x + att.o(out.transpose(1, 2).reshape(r, 1, h * d))
            x = _feed_forward(blk.layer[2], x)
        x = dec.final_layer_norm(x) * self._output_scale
        new_state = {**state, "self": new_self, "t": t + 1}
        with torch.autocast(x.device.type, enabled=False):  # bf16 logits would be rounded to ~0.4%: near-ties flip
            logits = self.hf.lm_head(x.float())[:, 0]
            if self.config.edge_head:
                index = self.prefix_index()
                lo, hi = state["lo"], state["hi"]
                if beam_idx is not None:  # `tokens` continue the parents' prefixes of length t - 1
                    lo, hi = index.step(lo[beam_idx], hi[beam_idx], tokens, t - 1)
                logits = logits + edge_logits(index, x.float()[:, 0], lo, hi, t, dec.edge_vectors.weight.float())
                new_state.update(lo=lo, hi=hi)
        return logits, new_state


def _feed_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x + T5LayerFF(x) at inference, in place on x (.., D), which the caller owns. With T5's ReLU feed-forward:
    CACHE_ROWS rows at a time (the (rows, d_ff) hidden layer stays in cache), the ReLU in place and the hidden
    layer kept in the projection's dtype (transformers casts it to float32 under bf16 autocast, and back)."""
    dense = layer.DenseReluDense
    if not (hasattr(dense, "wi") and isinstance(dense.act, nn.ReLU)):
        return layer(x)
    rows = x.view(-1, x.shape[-1])
    for lo in range(0, rows.shape[0], CACHE_ROWS):
        part = rows[lo:lo + CACHE_ROWS]
        part += dense.wo(dense.wi(layer.layer_norm(part)).relu_())
    return x


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)
