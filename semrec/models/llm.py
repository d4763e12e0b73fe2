"""Title-token LLM recommender (TALLRec / BIGRec style, the TCA4Rec paper's main setting).

A prompt lists the titles of the user's last `max_history` items; a pretrained causal LM (any local
Hugging Face directory loadable by ``AutoModelForCausalLM``: Llama, Qwen, GPT-2, SmolLM) generates the
next item's title tokens, which are the item's row of a title-scheme :class:`~semrec.itemtok.artifact.ItemTokenization`
(cleaned title + EOS; identical titles share one entry). Training (NTP, TCA Soft-NTP, aux-KL, MSL) runs
through the shared :class:`~semrec.training.Trainer`, decoding through the shared trie-constrained beam
search (`semrec.decoding`), so every generated title is a catalogue title.

    tok = title_tokenization_for_llm(dataset)                 # semrec.itemtok; default backbone: SmolLM2-135M-Instruct
    model = build_model("llm", tok, {"lora_r": 8}, seed=0)
    Trainer(model, llm_train_config("tca", alpha=0.1), dataset.train, valid=dataset.valid, teacher=sasrec).fit()
    model.save_pretrained("runs/llm_tca")                      # adapter + tokenization + config
    model = load_model("runs/llm_tca")

Prompt layout (one row, before left padding)::

    [BOS] head  seg(i_1) sep seg(i_2) ... sep seg(i_H)  tail [response token]  | title tokens ... EOS

`head`/`tail` are the template's text before/after ``{history}``; seg(i) is ``item_template`` filled with
item i's title, tokenized once per item (so prompts are assembled from cached pieces, not re-tokenized);
the response token (the tokenizer's BOS, as in the authors' code) separates the prompt from the title.
With ``cf_embeddings`` a user slot is put first and an item slot after every title: their input
embeddings are the frozen CF teacher's user state / item embedding through a trainable MLP (the
authors' ``use_feature`` mode).

On disk: ``config.json``, ``tokenization/`` (with the tokenizer), ``adapter/`` (PEFT LoRA adapter:
``adapter_config.json`` + ``adapter_model.safetensors``) or ``model.safetensors`` (full fine-tuning),
``cf_projection.safetensors`` and ``cf_teacher/`` with ``cf_embeddings``. The base model itself is not
copied: ``config.model_path`` (None = the prepared default backbone) and its fingerprint are stored,
and loading refuses a different base.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from semrec.errors import SemrecError
from semrec.data.examples import ExampleTable
from semrec.models.batching import Batch
from semrec.models.base import register_model
from semrec.models.decoder import DecoderRecommender

DEFAULT_TEMPLATE = (
    "### Instruction:\nThe user interacted with the {domain} below, oldest first. Name the {domain} the user "
    "is most likely to interact with next.\n\n### Input:\nHistory: {history}.\n\n### Response:"
)
USER_SLOT, ITEM_SLOT = -2, -3  # placeholder ids in input_ids; replaced by projected CF embeddings
ADAPTER_DIR = "adapter"
CF_PROJECTION_FILE = "cf_projection.safetensors"
CF_TEACHER_DIR = "cf_teacher"


@dataclass
class LLMConfig:
    """A title-token LLM recommender.

    model_path: local HF causal-LM directory; None = SmolLM2-135M-Instruct from `semrec llm prepare`.
    template: prompt text with ``{history}`` (and optionally ``{domain}``); item_template: one history
    item, with ``{title}``; chat_template: wrap the prompt in the tokenizer's chat template (user turn +
    generation prompt). prompt_bos: start with the tokenizer's BOS; response_start "bos": put BOS between
    prompt and title (the authors' layout; "auto" = "bos" for plain prompts, "none" with chat_template). finetune "lora" (peft; lora_target_modules None = q/k/v/o
    projections when the model has them, else peft's default for the architecture) or "full".
    dtype "auto": bfloat16 on CUDA with LoRA, else float32.
    """

    model_path: str | None = None
    max_history: int = 10
    template: str = DEFAULT_TEMPLATE
    domain: str = "items"
    item_template: str = '"{title}"'
    separator: str = ", "
    chat_template: bool = False
    prompt_bos: bool = True
    response_start: Literal["auto", "bos", "none"] = "auto"
    finetune: Literal["lora", "full"] = "lora"
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # e.g. "sdpa", "eager", "flash_attention_2"; None = transformers' choice
    cf_embeddings: bool = False
    cf_teacher: str | None = None  # CF teacher directory for cf_embeddings (or attach one in code)
    cf_projection_mult: int = 5  # MLP d -> mult*d -> hidden, as in the authors' code

    def __post_init__(self) -> None:
        if self.max_history < 1:
            raise ValueError("max_history must be >= 1")
        if "{history}" not in self.template or self.template.count("{history}") != 1:
            raise ValueError("template must contain '{history}' exactly once")
        if "{title}" not in self.item_template:
            raise ValueError("item_template must contain '{title}'")
        if self.lora_r < 1 or self.lora_alpha <= 0 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError("lora_r must be >= 1, lora_alpha > 0, lora_dropout in [0, 1)")
        if self.cf_projection_mult < 1:
            raise ValueError("cf_projection_mult must be >= 1")


def backbone_fingerprint(path: str | Path) -> str:
    """SHA-256 (16 hex digits) of a model directory's config.json and the sizes of its weight files."""
    path = Path(path)
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def _torch_dtype(name: str, finetune: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and finetune == "lora" else torch.float32
    return getattr(torch, name)


def _load_causal_lm(path: Path, dtype: torch.dtype, attn: str | None) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kw: dict[str, Any] = {"local_files_only": True}
    if attn:
        kw["attn_implementation"] = attn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            try:
                return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kw)
            except TypeError:  # transformers 4.x
                return AutoModelForCausalLM.from_pretrained(str(path), torch_dtype=dtype, **kw)
        except (OSError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise SemrecError(f"{path}: cannot load a causal LM ({type(e).__name__}: {first})") from None


def _lora_targets(hf: nn.Module, wanted: list[str] | None) -> list[str] | None:
    names = {n.rsplit(".", 1)[-1] for n, m in hf.named_modules() if isinstance(m, nn.Linear)}
    if wanted is None:
        qkvo = ["q_proj", "k_proj", "v_proj", "o_proj"]
        return qkvo if all(t in names for t in qkvo) else None
    conv1d = {n.rsplit(".", 1)[-1] for n, m in hf.named_modules() if type(m).__name__ == "Conv1D"}
    missing = [t for t in wanted if t not in names | conv1d]
    if missing:
        raise SemrecError(f"lora_target_modules: {missing} not found in the model; its linear layers are "
                          f"named {sorted(names | conv1d)}")
    return list(wanted)


@register_model
class LLMRecommender(DecoderRecommender):
    """Title-token recommender on a pretrained causal LM (see the module docstring)."""

    arch = "llm"
    config_class = LLMConfig
    is_encoder_decoder = False
    source_padding_side = "left"

    def __init__(self, config: Any, tokenization: Any, hf_model: nn.Module | None = None, *, cf_teacher=None):
        if getattr(tokenization, "eos_id", None) is None:
            raise SemrecError("llm: the item tokenization must end every title with EOS (use the title scheme)")
        super().__init__(config, tokenization, hf_model)
        c = self.config
        if not hasattr(self, "backbone"):  # hf_model given: no base directory behind it
            self.backbone = {"path": None, "fingerprint": None}
        self.item_text_tokenizer = self._text_tokenizer()
        if len(self.item_text_tokenizer) > self.vocab_size:
            raise SemrecError(f"llm: the title tokenizer has {len(self.item_text_tokenizer)} tokens but the model's "
                              f"output layer only {self.vocab_size}; tokenizer and model do not belong together")
        self._check_tokenizer_matches_backbone()
        self._pieces: dict | None = None
        self.cf_teacher = None
        self.cf_projection = None
        if c.cf_embeddings:
            teacher = cf_teacher
            if teacher is None and c.cf_teacher:
                from semrec.cf import CFTeacher

                teacher = CFTeacher.from_pretrained(c.cf_teacher)
            if teacher is None:
                raise SemrecError("llm: cf_embeddings needs a CF teacher (config cf_teacher: DIR, or cf_teacher=...)")
            self.attach_cf_teacher(teacher)

    # ----- construction -----------------------------------------------------------------------
    @classmethod
    def from_tokenization(cls, tokenization: Any, config: Any = None, *, seed: int | None = None,
                          cf_teacher=None) -> "LLMRecommender":
        from semrec.config import load_config

        cfg = config if dataclasses.is_dataclass(config) else load_config(cls.config_class, config,
                                                                          name="llm model config")
        if seed is not None:
            torch.manual_seed(seed)
        return cls(cfg, tokenization, cf_teacher=cf_teacher)

    def backbone_path(self) -> Path:
        from semrec.llm_assets import resolve_backbone

        return resolve_backbone(self.config.model_path, log=lambda m: print(f"semrec: {m}", flush=True))

    def _build_hf(self) -> nn.Module:
        c = self.config
        path = self.backbone_path()
        self.backbone = {"path": str(path), "fingerprint": backbone_fingerprint(path)}
        hf = _load_causal_lm(path, _torch_dtype(c.dtype, c.finetune), c.attn_implementation)
        hf.config.use_cache = True
        if c.gradient_checkpointing:
            kw = {"use_reentrant": False}
            if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.x
                hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
            else:
                hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
        if c.finetune == "full":
            hf.requires_grad_(True)
            return hf
        from peft import LoraConfig, get_peft_model

        targets = _lora_targets(hf, c.lora_target_modules)
        conv1d = any(type(m).__name__ == "Conv1D" for m in hf.modules())  # GPT-2 style (in, out) weights
        lcfg = LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout, bias="none",
                          target_modules=targets, fan_in_fan_out=conv1d, task_type="CAUSAL_LM")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # peft probes deprecated transformers attributes
                return get_peft_model(hf, lcfg)
        except ValueError as e:
            raise SemrecError(f"llm: cannot attach LoRA to {path} ({e}); set lora_target_modules") from None

    def _text_tokenizer(self):
        tok = getattr(self.tokenization, "tokenizer", None)
        if tok is None:
            from semrec.itemtok.artifact import load_tokenizer

            tok = load_tokenizer(self.backbone_path())
        return tok

    def _check_tokenizer_matches_backbone(self) -> None:
        """Refuse a title tokenization made with another tokenizer than the one shipped with the model."""
        path = self.backbone.get("path")
        if not path or not any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json",
                                                                  "vocab.json", "tokenizer.model")):
            return
        from semrec.itemtok.artifact import load_tokenizer

        try:
            own = load_tokenizer(path)
        except SemrecError:
            return
        probe = "Hello, LEGO Star Wars 75037 (Blue) - 12\" & Co."
        mine = self.item_text_tokenizer
        if len(own) != len(mine) or own(probe, add_special_tokens=False)["input_ids"] != \
                mine(probe, add_special_tokens=False)["input_ids"]:
            raise SemrecError(f"llm: the item tokenization's titles were tokenized with another tokenizer than "
                              f"{path}'s; build it with semrec.itemtok.titles.title_tokenization_for_llm or set the "
                              "title scheme's tokenizer_path to the model directory")

    def attach_cf_teacher(self, teacher) -> None:
        """Use `teacher` (a frozen semrec.cf.CFTeacher) for the CF soft tokens; builds the projection MLP."""
        if teacher.num_items != self.codes.shape[0]:
            raise SemrecError(f"llm: CF teacher scores {teacher.num_items} items, the tokenization has "
                              f"{self.codes.shape[0]}")
        teacher.eval().requires_grad_(False)
        d = int(teacher.item_embeddings().shape[1])
        hidden = int(self.hf.get_input_embeddings().weight.shape[1])
        m = self.config.cf_projection_mult
        dev = self.hf.get_input_embeddings().weight.device
        self.cf_teacher = teacher.to(dev)
        if self.cf_projection is None:
            self.cf_projection = nn.Sequential(nn.Linear(d, d * m), nn.ReLU(), nn.Linear(d * m, hidden)).to(dev)

    # ----- prompts ------------------------------------------------------------------------------
    def item_titles(self) -> list[str]:
        """Each item's title text, decoded from its title tokens (without EOS)."""
        tok = self.item_text_tokenizer
        rows = [self.tokenization.codes_of_item(i)[:-1] for i in range(self.codes.shape[0])]
        return tok.batch_decode(rows, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _prompt_pieces(self) -> dict:
        if self._pieces is not None:
            return self._pieces
        c, tok = self.config, self.item_text_tokenizer
        text = c.template.replace("{domain}", c.domain)
        head, tail = text.split("{history}")
        if c.chat_template:
            marker = "\u0000SEMREC_PROMPT\u0000"
            try:
                rendered = tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                                   add_generation_prompt=True)
            except Exception as e:  # noqa: BLE001 - missing or broken chat template
                raise SemrecError(f"llm: chat_template is on but the tokenizer has no usable chat template "
                                  f"({e})") from None
            before, after = rendered.split(marker)
            head, tail = before + head, tail + after

        def ids(s: str) -> list[int]:
            return tok(s, add_special_tokens=False)["input_ids"] if s else []

        bos = self.tokenization.bos_id  # the tokenizer's BOS (CLS for BERT-style tokenizers)
        head_ids = ([bos] if c.prompt_bos and bos is not None and not c.chat_template else []) + ids(head)
        response_bos = c.response_start == "bos" or (c.response_start == "auto" and not c.chat_template)
        tail_ids = ids(tail) + ([bos] if response_bos and bos is not None else [])
        if c.cf_embeddings:
            head_ids = [USER_SLOT] + head_ids
        titles = self.item_titles()
        segs = tok([c.item_template.replace("{title}", t) for t in titles], add_special_tokens=False)["input_ids"]
        if c.cf_embeddings:
            segs = [s + [ITEM_SLOT] for s in segs]
        self._pieces = {"head": head_ids, "tail": tail_ids, "sep": ids(c.separator), "segs": segs}
        return self._pieces

    def prompt_text(self, history: list[int]) -> str:
        """The prompt of one history (item ids, oldest first) as text, for inspection."""
        p = self._prompt_pieces()
        ids = self._prompt_ids([i for i in history if i >= 0][-self.max_history:], p)
        tok = self.item_text_tokenizer
        out, run = [], []
        for t in ids + [None]:
            if t is not None and t >= 0:
                run.append(t)
                continue
            if run:
                out.append(tok.decode(run, clean_up_tokenization_spaces=False))
                run = []
            if t is not None:
                out.append("[UserEmb]" if t == USER_SLOT else "[ItemEmb]")
        return "".join(out)

    @staticmethod
    def _prompt_ids(items: list[int], p: dict) -> list[int]:
        out = list(p["head"])
        for k, i in enumerate(items):
            if k:
                out += p["sep"]
            out += p["segs"][i]
        return out + p["tail"]

    def source_tokens(self, histories: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H) left-padded item ids -> prompt ids (B, S) left-padded with pad_id, attention mask (B, S)."""
        p = self._prompt_pieces()
        rows = [self._prompt_ids([i for i in h if i >= 0], p) for h in histories.tolist()]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
            if r:
                ids[b, width - len(r):] = torch.tensor(r)
                mask[b, width - len(r):] = 1
        return ids, mask

    def collate(self, table: ExampleTable, rows: torch.Tensor, *, with_targets: bool = True,
                train_eos: bool = True) -> Batch:
        """As the base class, with target columns trimmed to the longest title of the batch."""
        batch = super().collate(table, rows, with_targets=with_targets, train_eos=train_eos)
        if with_targets:
            width = max(1, int((batch.target_tokens != self.pad_id).sum(1).max()))
            batch.target_tokens = batch.target_tokens[:, :width]
            batch.labels = batch.labels[:, :width]
        return batch

    # ----- forward passes -------------------------------------------------------------------------
    def _token_inputs(self, ids: torch.Tensor, histories: torch.Tensor) -> dict:
        """input_ids, or inputs_embeds with the CF slots filled (cf_embeddings)."""
        if self.cf_projection is None:
            return {"input_ids": ids}
        emb = self.hf.get_input_embeddings()
        x = emb(ids.clamp(min=0))
        hist = histories[:, -self.max_history:]
        user_vec = self.cf_projection(self.cf_teacher.user_states(histories).float())
        item_vec = self.cf_projection(self.cf_teacher.item_embeddings()[hist[hist >= 0]].float())
        user_mask, item_mask = ids == USER_SLOT, ids == ITEM_SLOT
        if int(user_mask.sum()) != len(ids) or int(item_mask.sum()) != item_vec.shape[0]:
            raise SemrecError("llm: prompt CF slots do not match the histories (collate and forward disagree)")
        x = x.masked_scatter(user_mask.unsqueeze(-1), user_vec.to(x.dtype))
        x = x.masked_scatter(item_mask.unsqueeze(-1), item_vec.to(x.dtype))
        return {"inputs_embeds": x}

    # ----- artifacts ----------------------------------------------------------------------------
    def config_json(self) -> dict:
        out = super().config_json()
        out["backbone"] = dict(self.backbone)
        out["finetune"] = self.config.finetune
        return out

    def _save_weights(self, out: Path) -> None:
        from safetensors.torch import save_file

        if self.config.finetune == "lora":
            from peft import get_peft_model_state_dict

            (out / ADAPTER_DIR).mkdir()
            state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.hf).items()}
            save_file(state, str(out / ADAPTER_DIR / "adapter_model.safetensors"), metadata={"format": "pt"})
            lcfg = dataclasses.replace(self.hf.peft_config["default"], base_model_name_or_path=self.backbone["path"],
                                       inference_mode=True)
            lcfg.save_pretrained(str(out / ADAPTER_DIR))
        else:
            super()._save_weights(out)
        if self.cf_projection is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.cf_projection.state_dict().items()},
                      str(out / CF_PROJECTION_FILE))
            self.cf_teacher.save_pretrained(out / CF_TEACHER_DIR)

    def load_weights(self, path: Path) -> None:
        from semrec.artifacts import load_safetensors

        path = Path(path)
        if self.config.finetune == "lora":
            from peft import set_peft_model_state_dict

            f = path / ADAPTER_DIR / "adapter_model.safetensors"
            if not f.is_file():
                raise SemrecError(f"{f}: missing LoRA adapter weights")
            state = load_safetensors(f)
            res = set_peft_model_state_dict(self.hf, state)
            if getattr(res, "unexpected_keys", None):
                raise SemrecError(f"{f}: adapter does not fit the model (unexpected {res.unexpected_keys[:3]})")
            expected = set(get_peft_keys(self.hf))
            if expected - set(state):
                raise SemrecError(f"{f}: adapter lacks {sorted(expected - set(state))[:3]}")
        else:
            super().load_weights(path)
        if self.cf_projection is not None:
            f = path / CF_PROJECTION_FILE
            if not f.is_file():
                raise SemrecError(f"{f}: missing CF projection weights")
            dev = next(self.cf_projection.parameters()).device
            self.cf_projection.load_state_dict({k: v.to(dev) for k, v in load_safetensors(f).items()})

    @classmethod
    def _instantiate_for_loading(cls, cfg: Any, tokenization: Any, path: Path) -> "LLMRecommender":
        from semrec.artifacts import read_json

        teacher = None
        if cfg.cf_embeddings:
            from semrec.cf import CFTeacher

            teacher = CFTeacher.from_pretrained(path / CF_TEACHER_DIR)
        model = cls(cfg, tokenization, cf_teacher=teacher)
        stored = (read_json(path / "config.json").get("backbone") or {}).get("fingerprint")
        if stored and stored != model.backbone["fingerprint"]:
            raise SemrecError(f"{path}: trained on base model {stored}, but {model.backbone['path']} has fingerprint "
                              f"{model.backbone['fingerprint']} (set model_path to the original base model)")
        return model


def get_peft_keys(hf: nn.Module) -> list[str]:
    from peft import get_peft_model_state_dict

    return list(get_peft_model_state_dict(hf).keys())


# ----------------------------------------------------------------------------------------- helpers


__all__ = ["DEFAULT_TEMPLATE", "LLMConfig", "LLMRecommender", "backbone_fingerprint"]
