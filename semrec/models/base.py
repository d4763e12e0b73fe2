"""The common shape of every generative recommender: a Hugging Face model plus its item tokenization.

A `GenerativeRecommender` turns histories into token inputs (`collate`), scores a target item's token
sequence with teacher forcing (`forward` -> logits (B, L, V)), and exposes the three hooks the beam
search in `semrec.decoding` drives (`prefill`, `expand_state`, `step`). The trainer, the decoder and the
evaluation only use this interface, so encoder-decoder (TIGER), decoder-only over semantic IDs and
title-token LLMs share them.

Vocabulary: the model vocabulary starts with the tokenization's vocabulary (ids 0..tok.vocab_size-1,
the ids in `tokenization.codes`); a model may append its own extra tokens (start token, hashed user
tokens). Logits always cover the whole model vocabulary `vocab_size`; the prefix index is built with
that vocabulary so its masks line up with the logits.

On disk (`save_pretrained(dir)`): `config.json` (arch, typed model config, tokenization fingerprint,
training info), `model.safetensors`, and `tokenization/` (the ItemTokenization artifact).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from semrec.config import config_to_dict, load_config
from semrec.errors import SemrecError
from semrec.artifacts import atomic_dir, read_json, write_json
from semrec.data.examples import ExampleTable
from semrec.models.batching import Batch

FORMAT = "semrec-generative"
FORMAT_VERSION = 1

# arch name -> class; filled by the @register_model decorator of each model module
MODELS: dict[str, type["GenerativeRecommender"]] = {}


def register_model(cls: type["GenerativeRecommender"]) -> type["GenerativeRecommender"]:
    MODELS[cls.arch] = cls
    return cls


def tokenization_fingerprint(tok: Any) -> str:
    """SHA-256 (first 16 hex digits) of an item tokenization's codes and special ids."""
    codes = np.ascontiguousarray(torch.as_tensor(tok.codes).cpu().numpy().astype(np.int64))
    h = hashlib.sha256(codes.tobytes())
    h.update(json.dumps([list(codes.shape), int(tok.vocab_size), tok.pad_id, tok.eos_id,
                         getattr(tok, "bos_id", None)]).encode())
    return h.hexdigest()[:16]


def describe_tokenization(tok: Any) -> dict:
    return {"scheme": str(getattr(tok, "scheme", "unknown")), "fingerprint": tokenization_fingerprint(tok),
            "num_items": int(tok.codes.shape[0]), "max_len": int(tok.codes.shape[1]),
            "vocab_size": int(tok.vocab_size)}


class GenerativeRecommender(nn.Module):
    """Base class. Subclasses set `arch`, `config_class`, `is_encoder_decoder` and implement
    `_build_hf`, `source_tokens`, `forward`, `prefill`, `expand_state`, `step`."""

    arch: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    is_encoder_decoder: ClassVar[bool] = False
    source_padding_side: ClassVar[str] = "right"

    def __init__(self, config: Any, tokenization: Any, hf_model: nn.Module | None = None):
        super().__init__()
        if not dataclasses.is_dataclass(config):
            config = load_config(self.config_class, config, name=f"{self.arch} model config")
        self.config = config
        self.tokenization = tokenization
        codes = torch.as_tensor(tokenization.codes, dtype=torch.long)
        if codes.ndim != 2 or codes.shape[0] == 0:
            raise SemrecError(f"{self.arch}: item tokenization codes must be a non-empty (N, L) table")
        self.pad_id = int(tokenization.pad_id)
        self.eos_id = None if tokenization.eos_id is None else int(tokenization.eos_id)
        if self.eos_id is not None and self.eos_id == self.pad_id:
            raise SemrecError(f"{self.arch}: the item tokenization's pad_id and eos_id must differ "
                              f"(both {self.pad_id})")
        self.item_vocab_size = int(max(int(tokenization.vocab_size), int(codes.max()) + 1, self.pad_id + 1))
        bos = getattr(tokenization, "bos_id", None)
        # start token: the tokenization's BOS when it has one, else one extra token after its vocabulary
        self.start_id = int(bos) if bos is not None else self.item_vocab_size
        self.extra_base = self.item_vocab_size + (0 if bos is not None else 1)  # first model-only token id
        self.register_buffer("codes", codes, persistent=False)
        self._codes_cpu = codes
        self.training_info: dict = {}
        self._index = None
        self._canonical = None
        self.hf = hf_model if hf_model is not None else self._build_hf()

    # ----- construction -------------------------------------------------------------------------
    @classmethod
    def from_tokenization(cls, tokenization: Any, config: Any = None, *, seed: int | None = None):
        """A freshly initialised model for `tokenization` (config: dataclass, dict, YAML path or None)."""
        cfg = config if dataclasses.is_dataclass(config) else load_config(
            cls.config_class, config, name=f"{cls.arch} model config")
        if seed is not None:
            torch.manual_seed(seed)
        return cls(cfg, tokenization)

    def _build_hf(self) -> nn.Module:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        """Size of the model's output vocabulary (logits' last dimension)."""
        return int(self.hf.get_output_embeddings().weight.shape[0])

    @property
    def max_history(self) -> int:
        return int(self.config.max_history)

    @property
    def learns_every_item(self) -> bool:
        """Whether one training pass over a sequence learns each of its items (then the rows suffice as
        training examples, see `semrec.models.training_examples`); False: the target item only."""
        return False

    @property
    def state_is_reusable(self) -> bool:
        """Whether `step` leaves the state it is given untouched, so one state can be stepped more than
        once (exact scoring steps a prefix's state once per chunk of its children); when False, such a
        caller copies the state first."""
        return False

    @property
    def max_target_len(self) -> int:
        return int(self.codes.shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prefix_index(self):
        """The PrefixIndex of the catalogue in the model vocabulary, on the model's device (cached)."""
        from semrec.trie import PrefixIndex

        dev = self.device
        if self._index is None:
            self._index = PrefixIndex(self.codes.cpu(), pad_id=self.pad_id, vocab_size=self.vocab_size)
            self._index_device = torch.device("cpu")
        if self._index_device != dev:
            self._index = self._index.to(dev)
            self._index_device = dev
        return self._index

    def canonical_items(self) -> torch.Tensor:
        """(N,) on the model's device: for each item, the smallest item id with the same token sequence
        (what decoding returns for items sharing a sequence, e.g. identical titles)."""
        index = self.prefix_index()
        if getattr(self, "_canonical", None) is None or self._canonical.device != index.device:
            self._canonical = index.items_of(self.codes.to(index.device))
        return self._canonical

    # ----- data -------------------------------------------------------------------------------
    def source_tokens(self, histories: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H) left-padded item ids, (B,) users -> input ids (B, S) and attention mask (B, S)."""
        raise NotImplementedError

    def collate(self, table: ExampleTable, rows: torch.Tensor, *, with_targets: bool = True,
                train_eos: bool = True) -> Batch:
        """Rows of an ExampleTable -> a CPU Batch. `train_eos=False` leaves EOS positions untrained."""
        hist = table.histories[rows]
        users = table.users[rows]
        model_hist = hist[:, max(0, hist.shape[1] - self.max_history):]
        src, mask = self.source_tokens(model_hist, users)
        batch = Batch(input_ids=src, attention_mask=mask, histories=hist, users=users, rows=rows.clone())
        if with_targets:
            targets = table.targets[rows]
            tgt = self._codes_cpu[targets]
            labels = tgt.masked_fill(tgt == self.pad_id, -100)
            if not train_eos and self.eos_id is not None:
                labels = labels.masked_fill(tgt == self.eos_id, -100)
            batch.labels, batch.target_tokens, batch.targets = labels, tgt, targets
        return batch

    # ----- model ------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) for the target tokens `batch.target_tokens`."""
        raise NotImplementedError

    def prefill(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        """Run the source once; return the first target token's logits (B, V) and a decoding state."""
        raise NotImplementedError

    def expand_state(self, state: dict, beams: int) -> dict:
        """Repeat every row of the state `beams` times (row b -> rows b*beams .. b*beams+beams-1)."""
        raise NotImplementedError

    def step(self, state: dict, tokens: torch.Tensor, beam_idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Continue the state's rows: new row i continues row `beam_idx[i]` (a row of the same user) with
        token `tokens[i]`. Returns the next logits (R', V) and the new state. Each user's new rows are
        consecutive, R' / B of them; R' may differ from the state's rows (beam search keeps it, exact
        scoring feeds a different number of prefixes at every step)."""
        raise NotImplementedError

    # ----- artifacts --------------------------------------------------------------------------
    def config_json(self) -> dict:
        """The metadata written to config.json (format, arch, config, tokenization, training info)."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": self.arch,
                "config": config_to_dict(self.config), "tokenization": describe_tokenization(self.tokenization),
                "training": self.training_info}

    def _save_weights(self, out: Path) -> None:
        from safetensors.torch import save_model

        save_model(self.hf, str(out / "model.safetensors"))

    def load_weights(self, path: Path) -> None:
        """Load the weights saved in directory `path` into this model (strict: shapes must match)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        f = path / "model.safetensors"
        if not f.is_file():
            raise SemrecError(f"{f}: missing model weights")
        try:
            load_model(self.hf, str(f), strict=True, device="cpu")
        except SafetensorError as e:
            raise SemrecError(f"{f}: truncated or corrupt safetensors file ({e})") from None
        except (RuntimeError, OSError) as e:
            raise SemrecError(f"{f}: weights do not fit the model config ({str(e).splitlines()[0]})") from None

    def save_pretrained(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Write config, weights and the item tokenization atomically to `out`."""
        with atomic_dir(out, overwrite=overwrite) as tmp:
            self._save_weights(tmp)
            self.tokenization.save_pretrained(tmp / "tokenization")
            write_json(tmp / "config.json", self.config_json())
        return Path(out)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, tokenization: Any = None,
                        device: str | torch.device = "cpu") -> "GenerativeRecommender":
        """Load a saved model. With `tokenization`, refuse a checkpoint trained for another one.

        Called on the base class, dispatches on the stored arch through `MODELS`."""
        path = Path(path)
        meta = read_json(path / "config.json")
        if meta.get("format") != FORMAT:
            raise SemrecError(f"{path}/config.json: not a semrec generative model")
        if cls.arch == "":
            if meta.get("arch") not in MODELS:
                raise SemrecError(f"{path}/config.json: unknown model arch {meta.get('arch')!r}; "
                                  f"known: {', '.join(MODELS)}")
            cls = MODELS[meta["arch"]]
        elif meta.get("arch") != cls.arch:
            raise SemrecError(f"{path}: holds a '{meta.get('arch')}' model, not '{cls.arch}'")
        stored = meta.get("tokenization", {})
        if tokenization is None:
            from semrec.itemtok.artifact import ItemTokenization

            tokenization = ItemTokenization.from_pretrained(path / "tokenization")
        given = describe_tokenization(tokenization)
        if given["fingerprint"] != stored.get("fingerprint"):
            raise SemrecError(
                f"{path}: model was trained for item tokenization {stored.get('scheme')!r} "
                f"(fingerprint {stored.get('fingerprint')}, "
                f"{stored.get('num_items')} items x {stored.get('max_len')}), "
                f"not the given {given['scheme']!r} (fingerprint {given['fingerprint']}, "
                f"{given['num_items']} items x {given['max_len']})")
        # options added after a model was saved take the values it was built with
        stored_cfg = {**getattr(cls.config_class, "legacy_defaults", {}), **meta["config"]}
        cfg = load_config(cls.config_class, stored_cfg, name=f"{path}/config.json config")
        model = cls._instantiate_for_loading(cfg, tokenization, path)
        model.load_weights(path)
        model.training_info = dict(meta.get("training") or {})
        return model.to(device).eval()

    @classmethod
    def _instantiate_for_loading(cls, cfg: Any, tokenization: Any, path: Path) -> "GenerativeRecommender":
        return cls(cfg, tokenization)


def _cache_apply(cache: Any, fn_name: str, arg: Any, *, self_attention_only: bool = False) -> Any:
    """Apply `reorder_cache(idx)` / `batch_repeat_interleave(n)` to a HF cache (Cache object or legacy tuples).

    With `self_attention_only`, an EncoderDecoderCache's cross-attention part is left alone (valid when
    rows are only permuted within groups that share the same encoder input)."""
    if cache is None:
        return None
    if hasattr(cache, "self_attention_cache") and hasattr(cache, "cross_attention_cache"):
        getattr(cache.self_attention_cache, fn_name)(arg)
        if not self_attention_only:
            getattr(cache.cross_attention_cache, fn_name)(arg)
        return cache
    if hasattr(cache, fn_name):
        getattr(cache, fn_name)(arg)
        return cache
    # legacy tuple-of-tuples cache: (layers) x (k, v[, cross_k, cross_v]) tensors with batch first
    def f(t: torch.Tensor) -> torch.Tensor:
        if fn_name == "reorder_cache":
            return t.index_select(0, arg.to(t.device))
        return t.repeat_interleave(arg, dim=0)

    return tuple(tuple(f(t) for t in layer) for layer in cache)


def reorder_cache(cache: Any, beam_idx: torch.Tensor, *, self_attention_only: bool = False) -> Any:
    return _cache_apply(cache, "reorder_cache", beam_idx, self_attention_only=self_attention_only)


def repeat_cache(cache: Any, repeats: int) -> Any:
    return _cache_apply(cache, "batch_repeat_interleave", repeats)
