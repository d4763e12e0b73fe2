"""The CF teacher interface every later stage uses, and its save/load.

A teacher maps histories -- 0-based item ids LEFT-padded with -1, most recent item last, exactly what
`Examples.padded_histories(L)` returns -- to one score per item:

    logits = teacher.item_logits(histories)      # (B, L) LongTensor -> (B, N) FloatTensor
    emb = teacher.item_embeddings()              # (N, d), the output item table (logits = h @ emb.T)

Internally ids are shifted by +1 so that 0 is padding (and N + 1 is BERT4Rec's [mask]).
Artifacts follow Hugging Face's shape: `save_pretrained(dir)` writes `config.json` (teacher type,
num_items, model config, plus optional extra metadata) and `model.safetensors`;
`CFTeacher.from_pretrained(dir)` picks the class by the type name in config.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from semrec.artifacts import atomic_dir, load_safetensors, read_json, write_json
from semrec.config import config_to_dict, load_config
from semrec.embeddings import check_matrix, load_matrix
from semrec.errors import SemrecError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "semrec-cf-teacher"

# name -> class; filled by the @register_teacher decorator of each model module
TEACHERS: dict[str, type["CFTeacher"]] = {}


def register_teacher(cls: type["CFTeacher"]) -> type["CFTeacher"]:
    TEACHERS[cls.name] = cls
    return cls


def get_teacher_class(name: str) -> type["CFTeacher"]:
    if name not in TEACHERS:
        raise SemrecError(f"unknown CF teacher '{name}'; known: {', '.join(sorted(TEACHERS))}")
    return TEACHERS[name]


def build_teacher(name: str, num_items: int, config: Any, *, seed: int) -> "CFTeacher":
    """A fresh teacher whose initial weights depend only on `seed` (torch's default seed differs per
    process, so an unseeded build would make two runs of the same config differ)."""
    from semrec.runtime import seed_everything

    klass = get_teacher_class(name)
    seed_everything(seed)
    return klass(num_items, config)


class CFTeacher(nn.Module):
    """Base class: a sequential recommender scoring all N items from a left-padded history.

    Subclasses set `name`, `config_class`, build their layers in `__init__(num_items, config)` and
    implement `encode(ids) -> (B, L, d)` hidden states and `training_pairs(windows, generator)`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    # how the trainer cuts sequences into windows: window length = max_len + window_extra;
    # consecutive windows of one sequence overlap by `window_overlap` items
    window_extra: ClassVar[int] = 1
    window_overlap: ClassVar[int] = 1
    # whether `training_pairs` are next-item pairs that can leave out repeated targets (`new_items`)
    next_item_pairs: ClassVar[bool] = True

    def __init__(self, num_items: int, config: Any) -> None:
        super().__init__()
        if num_items < 1:
            raise SemrecError(f"{self.name}: num_items must be positive, got {num_items}")
        if not isinstance(config, self.config_class):
            raise SemrecError(f"{self.name}: expected a {self.config_class.__name__}, got {type(config).__name__}")
        self.num_items = int(num_items)
        self.config = config
        self.max_len = int(config.max_len)
        self.hidden = int(config.hidden)
        # row 0 = padding, rows 1..N = items (+ extra rows such as [mask] in subclasses)
        self.item_emb = nn.Embedding(self.num_items + 1 + self.num_special_tokens(), self.hidden, padding_idx=0)

    @classmethod
    def num_special_tokens(cls) -> int:
        return 0

    # ---- the public interface -------------------------------------------------------------------
    def item_embeddings(self) -> torch.Tensor:
        """(N, d) output embedding of each item (row i = item i)."""
        return self.item_emb.weight[1:self.num_items + 1]

    def score_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """(M, d) user/sequence states -> (M, N) item logits."""
        return hidden @ self.item_embeddings().T

    def item_logits(self, histories: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) left-padded 0-based histories (-1 = padding) -> (B, N) logits for the next item.

        Only the last `max_len` items are used. `lengths` (B,), if given, marks the last lengths[b]
        columns of row b as the history; anything before them is treated as padding.
        """
        return self.score_hidden(self.user_states(histories, lengths))

    def user_states(self, histories: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) histories -> (B, d) the state whose dot product with item embeddings gives the logits."""
        ids = self.prepare_histories(histories, lengths)
        return self.encode_last(ids)

    # ---- helpers for subclasses ------------------------------------------------------------------
    def prepare_histories(self, histories: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Validate, apply `lengths`, keep the last `history_len` columns, shift to 1-based (0 = pad)."""
        device = self.item_emb.weight.device
        h = torch.as_tensor(histories, device=device).long()
        if h.dim() != 2:
            raise SemrecError(f"{self.name}: histories must be (B, L), got shape {tuple(h.shape)}")
        if h.numel() and int(h.max()) >= self.num_items:
            raise SemrecError(f"{self.name}: history item id {int(h.max())} outside 0..{self.num_items - 1}")
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=device).long().reshape(-1)
            if lengths.shape[0] != h.shape[0]:
                raise SemrecError(f"{self.name}: {lengths.shape[0]} lengths for {h.shape[0]} histories")
            cols = torch.arange(h.shape[1], device=device)
            h = torch.where(cols[None, :] >= h.shape[1] - lengths[:, None], h, torch.full_like(h, -1))
        keep = self.history_len()
        if h.shape[1] > keep:
            h = h[:, -keep:]
        ids = torch.where(h >= 0, h + 1, torch.zeros_like(h))
        return trim_left_padding(ids)

    def history_len(self) -> int:
        """How many history items the model reads (BERT4Rec reserves one slot for [mask])."""
        return self.max_len

    def encode_last(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) 1-based left-padded ids -> (B, d) state at the last position."""
        return self.encode(ids)[:, -1]

    def encode(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_pairs(self, windows: torch.Tensor, generator: torch.Generator | None = None, *,
                       new_items: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, W) 0-based windows (-1 left padding) -> (hidden (M, d), targets (M,) 0-based):
        the states and the items they must predict, only at positions that have a real target.

        Default (causal models): next-item pairs at every position, input = window[:, :-1],
        target = window[:, 1:]. `new_items` leaves out the pairs whose target is among the items read
        at that position (a repeat). Bidirectional models (BERT4Rec) override it."""
        windows = windows.to(self.item_emb.weight.device)
        inp, tgt = windows[:, :-1], windows[:, 1:]
        ids = torch.where(inp >= 0, inp + 1, torch.zeros_like(inp))
        hidden = self.encode(ids)
        keep = (inp >= 0) & (tgt >= 0)
        if new_items:
            keep &= ~repeated_targets(inp, tgt)
        return hidden[keep], tgt[keep]

    # ---- save / load -----------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {"format": FORMAT, "teacher_type": self.name, "num_items": self.num_items,
                "model": config_to_dict(self.config)}

    def save_pretrained(self, out: str | Path, *, extra: dict | None = None, overwrite: bool = True) -> Path:
        """Write `config.json` + `model.safetensors` to `out` (atomically; an existing dir is replaced)."""
        with atomic_dir(out, overwrite=overwrite) as tmp:
            self.save_to(tmp, extra=extra)
        return Path(out)

    def save_to(self, directory: str | Path, *, extra: dict | None = None) -> None:
        """Write the two files into an existing directory (used inside a caller's atomic_dir)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        cfg = self.config_dict()
        if extra:
            cfg["extra"] = extra
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT, "teacher_type": self.name})
        write_json(directory / CONFIG_NAME, cfg)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device | None = None) -> "CFTeacher":
        """Load a teacher directory; on the base class the concrete class comes from config.json."""
        path = Path(path)
        if not path.is_dir():
            raise SemrecError(f"{path}: not a CF teacher directory (train one with 'semrec train-cf')")
        meta = read_json(path / CONFIG_NAME)
        if meta.get("format") != FORMAT:
            raise SemrecError(f"{path / CONFIG_NAME}: not a semrec CF teacher config")
        klass = get_teacher_class(str(meta.get("teacher_type")))
        if cls is not CFTeacher and not issubclass(klass, cls):
            raise SemrecError(f"{path}: holds a '{klass.name}' teacher, not a '{cls.name}'")
        config = load_config(klass.config_class, meta.get("model", {}), name=f"{path / CONFIG_NAME}:model")
        model = klass(int(meta["num_items"]), config)
        model.load_weights(path)
        model.eval()
        if device is not None:
            model.to(torch.device(device))
        return model

    def load_weights(self, path: str | Path) -> None:
        """Load the model.safetensors of directory `path` into this teacher (its shapes must match)."""
        f = Path(path) / WEIGHTS_NAME
        state = load_safetensors(f)
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as e:  # a tensor of another shape
            raise SemrecError(f"{f}: weights do not match the config "
                              f"({str(e).strip().splitlines()[-1].strip()})") from None
        if missing or unexpected:
            raise SemrecError(f"{f}: weights do not match the config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")

    @staticmethod
    def read_extra(path: str | Path) -> dict:
        """The `extra` metadata saved with a teacher (training info, dataset name, ...)."""
        return read_json(Path(path) / CONFIG_NAME).get("extra", {})


def check_logits(logits: torch.Tensor, source: str) -> torch.Tensor:
    """Return (B, N) teacher `logits` unchanged, or raise naming `source` if any score is NaN or +inf or
    a row has no finite score (-inf alone is allowed: it marks an item excluded from the ranking)."""
    if not logits.numel():
        return logits
    row_max = logits.amax(-1)  # propagates NaN: not finite exactly where a row is bad (one pass, no masks)
    if not bool(torch.isfinite(row_max).all()):
        bad_rows = int((~torch.isfinite(row_max)).sum())
        raise SemrecError(f"{source}: item logits contain NaN or inf ({bad_rows} of {logits.shape[0]} rows); "
                          "the teacher's weights are corrupt or its training diverged")
    return logits


def teacher_name(teacher: Any) -> str:
    """How errors name a teacher: "CF teacher 'sasrec'"."""
    return f"CF teacher '{getattr(teacher, 'name', None) or type(teacher).__name__}'"


def repeated_targets(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T) inputs and (B, T) next-item targets (0-based, -1 = padding) -> (B, T) bool: whether
    targets[b, t] is among inputs[b, :t + 1], the items read before predicting it."""
    t = inputs.shape[1]
    read = torch.ones(t, t, dtype=torch.bool, device=inputs.device).tril()  # (target pos, input pos)
    same = inputs[:, None, :] == targets[:, :, None]
    return (same & read).any(-1) & (targets >= 0)


def trim_left_padding(ids: torch.Tensor) -> torch.Tensor:
    """Drop leading columns that are padding (0) in every row; keeps at least one column."""
    if ids.shape[1] <= 1 or ids.shape[0] == 0:
        return ids
    nonpad = (ids != 0).any(0)
    if not bool(nonpad.any()):
        return ids[:, -1:]
    first = int(nonpad.float().argmax())
    return ids[:, first:]


def positions_from_start(ids: torch.Tensor) -> torch.Tensor:
    """(B, L) left-padded 1-based ids -> position of each item counted from the row's first real item
    (0, 1, ...); padding gets 0. Counting from the start makes left padding irrelevant."""
    valid = (ids != 0).long()
    return (valid.cumsum(1) - 1).clamp(min=0) * valid


def cf_item_embeddings(source: str | Path, num_items: int | None = None) -> np.ndarray:
    """(N, d) float32 CF item embeddings from a semrec.cf teacher directory or a .npy file."""
    source = Path(source)
    if source.is_dir():
        teacher = CFTeacher.from_pretrained(source, device="cpu")
        with torch.no_grad():
            arr = teacher.item_embeddings().detach().float().cpu().numpy()
        return check_matrix(arr, rows=num_items, what=f"{source}: teacher item embeddings")
    if source.suffix == ".npy" or source.is_file():
        return load_matrix(source, rows=num_items, what="CF item embeddings")
    raise SemrecError(f"{source}: neither a CF teacher directory nor a .npy file")
