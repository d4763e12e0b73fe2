"""Training checkpoints without pickles: tensors in safetensors, everything else in JSON.

A checkpoint directory holds `model/` (the model's own save_pretrained), `optimizer.safetensors` +
`optimizer.json` (the optimizer state_dict split into tensors and plain data), `scheduler.json` (when
there is a schedule), `rng.safetensors` + `rng.json` (torch CPU/CUDA, NumPy and Python generator states,
and the training task's own generators) and `trainer_state.json` (epoch, step, early-stopping state).
Written atomically.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semrec.errors import SemrecError
from semrec.artifacts import atomic_dir, load_safetensors, read_json, write_json


def _split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by {"__tensor__": key}, collecting the tensors."""
    if isinstance(obj, torch.Tensor):
        key = prefix.lstrip(".")
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _split_tensors(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__seq__": "tuple" if isinstance(obj, tuple) else "list",
                "items": [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise SemrecError(f"checkpoint: cannot store a {type(obj).__name__} at {prefix or 'top level'}")


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _join_tensors(v, tensors) for k, v in obj["__dict__"]}
        if "__seq__" in obj:
            items = [_join_tensors(v, tensors) for v in obj["items"]]
            return tuple(items) if obj["__seq__"] == "tuple" else items
    return obj


def save_state(directory: Path, name: str, state: Any) -> None:
    """Write a nested state (dicts/lists of tensors and plain data) as name.safetensors + name.json."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tensors(state, "", tensors)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    write_json(directory / f"{name}.json", skeleton)


def load_state(directory: Path, name: str, device: str | torch.device = "cpu") -> Any:
    f = directory / f"{name}.safetensors"
    if not f.is_file():
        raise SemrecError(f"{f}: missing checkpoint file")
    skeleton = read_json(directory / f"{name}.json")
    tensors = load_safetensors(f, device=str(device))
    try:
        return _join_tensors(skeleton, tensors)
    except KeyError as e:
        raise SemrecError(f"{f}: lacks tensor {e} named in {name}.json (files from different checkpoints?)") from None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": list(np.random.get_state())}
    state["numpy"][1] = torch.from_numpy(np.asarray(state["numpy"][1]).astype(np.int64))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], npst[1].numpy().astype(np.uint32), int(npst[2]), int(npst[3]), float(npst[4])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


def save_checkpoint(out: Path, *, model, optimizer: torch.optim.Optimizer, scheduler, trainer_state: dict,
                    generators: dict[str, torch.Generator] | None = None) -> Path:
    """Write a resumable checkpoint directory atomically (an existing one is replaced). `scheduler` may be
    None; `generators`: named generators of the caller's own, saved with the global ones."""
    rng = rng_state()
    if generators:
        rng["generators"] = {name: g.get_state() for name, g in generators.items()}
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp / "model")
        save_state(tmp, "optimizer", optimizer.state_dict())
        if scheduler is not None:
            write_json(tmp / "scheduler.json", scheduler.state_dict())
        save_state(tmp, "rng", rng)
        write_json(tmp / "trainer_state.json", trainer_state)
    return out


def load_checkpoint(path: Path, *, model, optimizer: torch.optim.Optimizer, scheduler,
                    generators: dict[str, torch.Generator] | None = None) -> dict:
    """Restore model weights, optimizer, scheduler and generator states in place; return the trainer state."""
    path = Path(path)
    if not (path / "trainer_state.json").is_file():
        raise SemrecError(f"{path}: not a training checkpoint (no trainer_state.json)")
    model.load_weights(path / "model")
    dev = next(model.parameters()).device
    optimizer.load_state_dict(load_state(path, "optimizer", dev))
    if scheduler is not None:
        scheduler.load_state_dict(read_json(path / "scheduler.json"))
    rng = load_state(path, "rng")
    set_rng_state(rng)
    for name, g in (generators or {}).items():
        if name not in rng.get("generators", {}):
            raise SemrecError(f"{path / 'rng.json'}: no state of generator '{name}' (a checkpoint of another run?)")
        g.set_state(rng["generators"][name])
    return read_json(path / "trainer_state.json")
