"""The item tokenization artifact: every item's token sequence in the generative model's vocabulary.

One type for every scheme (semantic IDs from a quantizer, or title tokens):

    tok = ItemTokenization.from_pretrained("runs/toys_rqvae")
    tok.codes            # LongTensor (N, L): item i's tokens, right-padded with pad_id
    tok.codes_of_item(7) # [t_1, ..., t_len] without padding
    tok.item_of_codes([5, 300, 560])   # -> item id (smallest one if several share it), -1 if none
    index = tok.prefix_index()         # semrec.trie.PrefixIndex over tok.codes

Vocabulary layout of semantic-ID schemes (`scheme` a quantizer name of semrec.quantizers.QUANTIZERS, or
"external" for codes made elsewhere):
    0 = <pad>, 1 = <bos>, 2 = <eos>   (always reserved; codes contain EOS only when eos_id is not None)
    level l code c -> token level_offsets[l] + c, level_offsets[0] = 3,
    level_offsets[l+1] = level_offsets[l] + codebook_sizes[l]; vocab_size = 3 + sum(codebook_sizes).
    A collision-resolving extra level (TIGER) is just one more level. All items have the same length.
Title schemes (`scheme` "title"): tokens are the LLM tokenizer's ids (level_offsets all 0,
codebook_sizes all vocab_size), each title followed by eos_id; pad_id is a special token that never
occurs inside a title; items whose token sequences are identical share one entry (`entry_of_item`,
`entry_items`: the smallest item id of each entry, like TCA4Rec's mapping_iid).

On disk: `tokenization.json` (layout, scheme, config, stats), `codes.npy` (N, L) int64,
`lengths.npy` (N,), `entry_of_item.npy` (N,); optionally `quantizer/` (the fitted quantizer, to encode
new items) and `tokenizer/` (the title tokenizer). No pickles.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from semrec.artifacts import atomic_dir, read_json, write_json
from semrec.embeddings import default_model_path
from semrec.errors import SemrecError
from semrec.quantizers import QUANTIZERS, Quantizer

FORMAT = "semrec-item-tokenization"
FORMAT_VERSION = 1
SID_SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
SID_PAD, SID_BOS, SID_EOS = 0, 1, 2
EXTERNAL_SCHEME = "external"  # codes made elsewhere: semrec.itemtok.external
LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _as_int_list(seq: Any) -> list[int]:
    if isinstance(seq, torch.Tensor):
        return [int(v) for v in seq.reshape(-1).tolist()]
    return [int(v) for v in np.asarray(seq).reshape(-1).tolist()]


@dataclass
class ItemTokenization:
    """Codes of every item in the model vocabulary plus the layout and config that produced them."""

    codes: torch.Tensor  # (N, L) int64, right-padded with pad_id
    vocab_size: int
    pad_id: int
    bos_id: int | None
    eos_id: int | None  # not None <=> every sequence ends with EOS
    level_offsets: list[int]  # (L,) token = raw code + level_offsets[position]
    codebook_sizes: list[int]  # (L,) raw codes at position l lie in [0, codebook_sizes[l])
    scheme: str
    config: dict = field(default_factory=dict)
    collisions_before: int = 0
    lengths: np.ndarray | None = None  # (N,) tokens per item (without padding)
    entry_of_item: np.ndarray | None = None  # (N,) merged-entry index (titles); arange for semantic IDs
    stats: dict = field(default_factory=dict)
    quantizer: Any = None  # fitted semrec.quantizers.Quantizer (semantic-ID schemes), saved in quantizer/
    tokenizer: Any = None  # HF tokenizer (title schemes), saved in tokenizer/

    def __post_init__(self) -> None:
        codes = torch.as_tensor(np.asarray(self.codes) if not isinstance(self.codes, torch.Tensor) else self.codes)
        if codes.ndim != 2:
            raise SemrecError(f"item tokenization: codes must be (items, length), got shape {tuple(codes.shape)}")
        self.codes = codes.to(torch.long).contiguous()
        n, length = self.codes.shape
        self.level_offsets = [int(v) for v in self.level_offsets]
        self.codebook_sizes = [int(v) for v in self.codebook_sizes]
        if len(self.level_offsets) != length or len(self.codebook_sizes) != length:
            raise SemrecError(f"item tokenization: {length} positions but {len(self.level_offsets)} offsets and "
                              f"{len(self.codebook_sizes)} codebook sizes")
        if self.lengths is None:
            self.lengths = (self.codes != self.pad_id).sum(1).numpy().astype(np.int64)
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        if self.entry_of_item is None:
            self.entry_of_item = np.arange(n, dtype=np.int64)
        self.entry_of_item = np.asarray(self.entry_of_item, dtype=np.int64)
        if len(self.lengths) != n or len(self.entry_of_item) != n:
            raise SemrecError("item tokenization: lengths/entry_of_item disagree with the number of items")
        if n and (int(self.codes.min()) < 0 or int(self.codes.max()) >= self.vocab_size):
            raise SemrecError(f"item tokenization: token ids outside 0..{self.vocab_size - 1}")
        self._lookup: dict[tuple, list[int]] | None = None

    # ------------------------------------------------------------------------------------- builders
    @classmethod
    def from_raw_codes(cls, raw: np.ndarray, codebook_sizes: Sequence[int], *, scheme: str, config: dict | None = None,
                       collisions_before: int = 0, append_eos: bool = False, stats: dict | None = None,
                       quantizer: Any = None) -> "ItemTokenization":
        """Semantic IDs from raw per-level codes (N, L) with codes[:, l] in [0, codebook_sizes[l])."""
        raw = np.asarray(raw, dtype=np.int64)
        sizes = [int(k) for k in codebook_sizes]
        if raw.ndim != 2 or raw.shape[1] != len(sizes):
            raise SemrecError(f"raw codes: expected shape (items, {len(sizes)}), got {raw.shape}")
        for l, k in enumerate(sizes):
            col = raw[:, l]
            if len(col) and (col.min() < 0 or col.max() >= k):
                raise SemrecError(f"raw codes: level {l} has a code outside 0..{k - 1}")
        offsets = (len(SID_SPECIAL_TOKENS) + np.concatenate([[0], np.cumsum(sizes)[:-1]])).astype(np.int64)
        vocab = len(SID_SPECIAL_TOKENS) + int(sum(sizes))
        codes = raw + offsets[None, :]
        if append_eos:
            codes = np.concatenate([codes, np.full((len(codes), 1), SID_EOS, dtype=np.int64)], axis=1)
            offsets = np.r_[offsets, 0]
            sizes = sizes + [vocab]
        return cls(torch.from_numpy(codes), vocab_size=vocab, pad_id=SID_PAD, bos_id=SID_BOS,
                   eos_id=SID_EOS if append_eos else None, level_offsets=offsets.tolist(), codebook_sizes=sizes,
                   scheme=scheme, config=config or {}, collisions_before=collisions_before,
                   lengths=np.full(len(codes), codes.shape[1], dtype=np.int64), stats=stats or {},
                   quantizer=quantizer)

    # ---------------------------------------------------------------------------------------- shape
    @property
    def num_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def num_levels(self) -> int:
        """Token positions per item (semantic IDs: levels, incl. an extra/EOS level; titles: max length)."""
        return int(self.codes.shape[1])

    @property
    def max_len(self) -> int:
        return int(self.codes.shape[1])

    @property
    def is_semantic_id(self) -> bool:
        return self.scheme in QUANTIZERS or self.scheme == EXTERNAL_SCHEME

    @property
    def num_entries(self) -> int:
        return int(self.entry_of_item.max()) + 1 if len(self.entry_of_item) else 0

    @property
    def entry_items(self) -> np.ndarray:
        """(num_entries,) the smallest item id of each entry."""
        out = np.full(self.num_entries, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(out, self.entry_of_item, np.arange(self.num_items))
        return out

    @property
    def raw_codes(self) -> np.ndarray:
        """(N, L) codes without the level offsets (pad positions stay pad_id)."""
        c = self.codes.numpy()
        return np.where(c == self.pad_id, self.pad_id, c - np.asarray(self.level_offsets)[None, :])

    # -------------------------------------------------------------------------------------- lookups
    def codes_of_item(self, item: int) -> list[int]:
        """Item `item`'s token sequence (model vocabulary, no padding)."""
        item = int(item)
        if not 0 <= item < self.num_items:
            raise SemrecError(f"item id {item} outside 0..{self.num_items - 1}")
        return self.codes[item, : int(self.lengths[item])].tolist()

    def _index(self) -> dict[tuple, list[int]]:
        if self._lookup is None:
            table: dict[tuple, list[int]] = {}
            rows = self.codes.tolist()
            for i, (row, n) in enumerate(zip(rows, self.lengths.tolist())):
                table.setdefault(tuple(row[:n]), []).append(i)
            self._lookup = table
        return self._lookup

    def _key(self, seq: Any) -> tuple:
        s = _as_int_list(seq)
        if self.eos_id is None or self.pad_id != self.eos_id:
            while s and s[-1] == self.pad_id:
                s.pop()
        return tuple(s)

    def items_of_codes(self, seq: Any) -> list[int]:
        """All items whose token sequence equals `seq` (trailing pad_id ignored), ascending; [] if none."""
        return list(self._index().get(self._key(seq), []))

    def item_of_codes(self, seq: Any) -> int:
        """The item whose token sequence equals `seq` (the smallest id when several share it), else -1."""
        items = self._index().get(self._key(seq))
        return items[0] if items else -1

    def token_strings(self) -> list[str]:
        """Names of the semantic-ID vocabulary: <pad>, <bos>, <eos>, then <a_0>.. <a_K-1>, <b_0>.. per level."""
        if not self.is_semantic_id:
            raise SemrecError("token_strings: title schemes use the LLM tokenizer's own vocabulary")
        names = list(SID_SPECIAL_TOKENS)
        levels = self.num_levels - (1 if self.eos_id is not None else 0)
        for l in range(levels):
            names += [f"<{LEVEL_LETTERS[l % 26]}{'' if l < 26 else l // 26}_{c}>" for c in range(self.codebook_sizes[l])]
        if len(names) != self.vocab_size:
            raise SemrecError("token_strings: layout does not add up to vocab_size")
        return names

    def prefix_index(self, device: str | torch.device | None = None):
        """semrec.trie.PrefixIndex over `codes` (built once per call; move with .to(device))."""
        try:
            from semrec.trie import PrefixIndex
        except ImportError as e:
            raise SemrecError(f"prefix_index: semrec.trie is not available ({e})") from None
        index = PrefixIndex(self.codes, pad_id=self.pad_id, vocab_size=self.vocab_size)
        return index.to(device) if device is not None else index

    def layout(self) -> dict:
        """The vocabulary layout as plain data (also written to tokenization.json)."""
        return {"vocab_size": self.vocab_size, "pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id,
                "level_offsets": self.level_offsets, "codebook_sizes": self.codebook_sizes,
                "special_tokens": list(SID_SPECIAL_TOKENS) if self.is_semantic_id else None,
                "num_items": self.num_items, "num_levels": self.num_levels, "num_entries": self.num_entries}

    # ------------------------------------------------------------------------------------------- io
    def save_pretrained(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Write the artifact directory atomically (JSON + .npy; quantizer/ and tokenizer/ when present)."""
        with atomic_dir(out, overwrite=overwrite) as tmp:
            np.save(tmp / "codes.npy", self.codes.numpy(), allow_pickle=False)
            np.save(tmp / "lengths.npy", self.lengths, allow_pickle=False)
            np.save(tmp / "entry_of_item.npy", self.entry_of_item, allow_pickle=False)
            write_json(tmp / "tokenization.json", {
                "format": FORMAT, "format_version": FORMAT_VERSION, "scheme": self.scheme,
                **self.layout(), "collisions_before": int(self.collisions_before),
                "config": self.config, "stats": self.stats,
                "has_quantizer": self.quantizer is not None, "has_tokenizer": self.tokenizer is not None})
            if self.quantizer is not None:
                self.quantizer.save_pretrained(tmp / "quantizer", overwrite=True)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        return Path(out)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, load_quantizer: bool = True) -> "ItemTokenization":
        path = Path(path)
        if not path.is_dir():
            raise SemrecError(f"{path}: not an item tokenization directory (run 'semrec tokenize')")
        meta = read_json(path / "tokenization.json")
        if meta.get("format") != FORMAT:
            raise SemrecError(f"{path}/tokenization.json: not a semrec item tokenization")
        arrays = {}
        for name in ("codes", "lengths", "entry_of_item"):
            f = path / f"{name}.npy"
            if not f.is_file():
                raise SemrecError(f"{f}: no such file")
            try:
                arrays[name] = np.load(f, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise SemrecError(f"{f}: corrupt or truncated array ({type(e).__name__}: {e})") from None
        if arrays["codes"].shape[0] != meta.get("num_items"):
            raise SemrecError(f"{path}: codes.npy has {arrays['codes'].shape[0]} rows, tokenization.json says "
                              f"{meta.get('num_items')} items")
        quantizer = tokenizer = None
        if load_quantizer and meta.get("has_quantizer") and (path / "quantizer").is_dir():
            quantizer = Quantizer.from_pretrained(path / "quantizer")
        if meta.get("has_tokenizer") and (path / "tokenizer").is_dir():
            tokenizer = load_tokenizer(path / "tokenizer")
        return cls(torch.from_numpy(arrays["codes"].astype(np.int64)), vocab_size=int(meta["vocab_size"]),
                   pad_id=int(meta["pad_id"]), bos_id=meta.get("bos_id"), eos_id=meta.get("eos_id"),
                   level_offsets=meta["level_offsets"], codebook_sizes=meta["codebook_sizes"], scheme=meta["scheme"],
                   config=meta.get("config", {}), collisions_before=int(meta.get("collisions_before", 0)),
                   lengths=arrays["lengths"], entry_of_item=arrays["entry_of_item"], stats=meta.get("stats", {}),
                   quantizer=quantizer, tokenizer=tokenizer)


def load_tokenizer(path: str | Path | None = None):
    """A Hugging Face tokenizer from a local directory (default: the bundled MiniLM model's)."""
    from transformers import AutoTokenizer  # optional heavy dependency, only for title schemes

    if path is None:
        path = default_model_path()
    path = Path(path).expanduser()
    if not path.is_dir():
        raise SemrecError(f"{path}: not a local tokenizer directory")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - any loader failure is a problem with the directory
            raise SemrecError(f"{path}: cannot load a tokenizer ({type(e).__name__}: {e})") from None
