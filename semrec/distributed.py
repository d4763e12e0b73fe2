"""torch.distributed helpers for runs launched by torchrun (DDP; see docs/distributed.md).

Under torchrun (WORLD_SIZE > 1 in the environment) `init()` starts the process group: NCCL when the
device is CUDA (each process on GPU LOCAL_RANK), else gloo. Without torchrun, or before `init()`,
every helper is a no-op for one process (rank 0 of 1), so single-process code paths are unchanged.

    distributed.init(device)                     # idempotent
    lo, hi = distributed.shard_bounds(n, chunk=batch_size)   # this rank's rows, whole batches
    full = distributed.gather_cat(local_tensor)  # every rank's rows, in rank (= row) order
    metrics = distributed.broadcast_object(metrics)          # rank 0's decision on every rank

Collectives move tensors only (JSON for Python objects): nothing is pickled.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import json
import os
from typing import Any, Callable, TypeVar

import torch

from semrec.errors import SemrecError

T = TypeVar("T")

# A rank-0-only stage (embedding a large catalogue) can keep the others at a barrier for long.
TIMEOUT_ENV = "SEMREC_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 4 * 3600


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SemrecError(f"environment variable {name}={raw!r}: expected an integer") from None


def launched() -> bool:
    """True in a process started by torchrun with more than one process in the job."""
    return _env_int("WORLD_SIZE", 1) > 1


def is_distributed() -> bool:
    """True once a process group of more than one process is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0) if is_distributed() else 0


def is_main() -> bool:
    """Rank 0: the only process that writes logs, checkpoints and artifacts."""
    return rank() == 0


def init(device: torch.device | str | None = None) -> bool:
    """Start the process group when launched by torchrun (no-op otherwise, or when already started).

    device: the run's device; CUDA -> NCCL backend and `torch.cuda.set_device(LOCAL_RANK)`, else gloo.
    Returns whether this process is part of a multi-process group."""
    import torch.distributed as dist

    if not launched():
        return False
    if dist.is_initialized():
        return is_distributed()
    if not dist.is_available():
        raise SemrecError("torchrun launched several processes but this torch has no torch.distributed")
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    backend = "gloo"
    if dev.type == "cuda":
        lr = _env_int("LOCAL_RANK", 0)
        if lr >= torch.cuda.device_count():
            raise SemrecError(f"LOCAL_RANK {lr} but this node has {torch.cuda.device_count()} GPU(s) "
                              "(--nproc_per_node must not exceed the GPU count)")
        torch.cuda.set_device(lr)
        backend = "nccl"
    timeout = datetime.timedelta(seconds=_env_int(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend=backend, timeout=timeout)
    atexit.register(cleanup)
    return is_distributed()


def cleanup() -> None:
    """Destroy the process group (safe to call when none exists)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device | str) -> torch.device:
    """The device this rank computes on: CUDA devices become cuda:LOCAL_RANK under torchrun."""
    dev = torch.device(device)
    if dev.type == "cuda" and is_distributed():
        return torch.device("cuda", local_rank())
    return dev


def _comm_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    import torch.distributed as dist

    if is_distributed():
        dist.barrier()


def wrap_ddp(module: torch.nn.Module, device: torch.device | str, **kwargs: Any) -> torch.nn.Module:
    """`module` wrapped in DistributedDataParallel in a multi-process group, `module` itself otherwise."""
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    dev = torch.device(device)
    ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, **kwargs)


def no_sync(module: torch.nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """DDP's no_sync() (gradient accumulation micro-steps: no all-reduce) when `skip`, else a null context."""
    if skip and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()


def check_batch_size(batch_size: int, what: str = "batch_size") -> None:
    """A global batch is split evenly across ranks: it must be a multiple of the world size."""
    w = world_size()
    if batch_size % w:
        raise SemrecError(f"{what} {batch_size} is not divisible by the world size {w} "
                          f"(each of the {w} processes takes an equal slice of every global batch)")


def local_rows(rows: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """This rank's contiguous slice of a global batch `rows` (first dim), and whether it is empty.

    A rank whose slice would be empty (a final batch smaller than the world size) gets rows[:1] and
    empty=True: it must still run forward/backward (DDP needs every rank) with a zero loss weight."""
    if not is_distributed():
        return rows, False
    part = torch.tensor_split(rows, world_size())[rank()]
    if len(part) == 0:
        return rows[:1], True
    return part, False


def shard_bounds(n: int, *, chunk: int = 1) -> tuple[int, int]:
    """This rank's contiguous share [lo, hi) of range(n), cut at multiples of `chunk` (e.g. whole
    evaluation batches, so each batch is computed exactly as in one process). Ranks in order cover
    range(n) exactly; a rank may get an empty range."""
    if not is_distributed():
        return 0, n
    chunks = -(-n // chunk)
    w, r = world_size(), rank()
    lo_c, hi_c = (chunks * r) // w, (chunks * (r + 1)) // w
    return min(lo_c * chunk, n), min(hi_c * chunk, n)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of `values` over ranks (a new tensor on the input's device)."""
    import torch.distributed as dist

    if not is_distributed():
        return values.clone()
    t = values.detach().to(_comm_device()).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.to(values.device)


def gather_cat(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `local` (first dims may differ, other dims must agree) in rank order.

    With `shard_bounds` slices this restores the original row order. Returns a tensor on the input's
    device, the same on every rank."""
    import torch.distributed as dist

    if not is_distributed():
        return local
    dev = _comm_device()
    w = world_size()
    n = torch.tensor([local.shape[0]], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(w)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s.item()) for s in sizes]
    m = max(sizes_i)
    padded = torch.zeros((m, *local.shape[1:]), dtype=local.dtype, device=dev)
    padded[: local.shape[0]] = local.to(dev)
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:k] for p, k in zip(parts, sizes_i)]).to(local.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s JSON-able `obj` on every rank (e.g. validation metrics, so that early stopping
    is decided identically everywhere). Floats survive exactly (JSON round-trips them)."""
    import torch.distributed as dist

    if not is_distributed():
        return obj
    dev = _comm_device()
    payload = json.dumps(obj).encode() if rank() == src else b""
    size = torch.tensor([len(payload)], dtype=torch.int64, device=dev)
    dist.broadcast(size, src)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=dev)
    if rank() == src:
        buf.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buf, src)
    return json.loads(buf.cpu().numpy().tobytes().decode()) if rank() != src else obj


def main_first(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0, then (after it succeeded) on the other ranks: for work that writes a cache
    that the others then read (dataset preparation, tokenization)."""
    if not is_distributed():
        return fn()
    if is_main():
        try:
            out = fn()
        except BaseException:
            broadcast_object(False)
            raise
        broadcast_object(True)
        return out
    if not broadcast_object(None):
        raise SemrecError("rank 0 failed (its error is printed above); stopping this rank too")
    return fn()


def seed_rank(seed: int, epoch: int) -> None:
    """In a group only: seed torch's global generators from (seed, epoch, rank), so each rank draws its
    own dropout masks (not copies of rank 0's), reproducibly across a resume at an epoch boundary."""
    if is_distributed():
        torch.manual_seed((seed * 1_000_003 + epoch * 7_919 + rank() * 104_729) % (2**63))
