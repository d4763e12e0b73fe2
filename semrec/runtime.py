"""Small runtime helpers shared by every stage: seeding, devices, machine description."""

from __future__ import annotations

import os
import platform
import random
import subprocess

import numpy as np
import torch

from semrec.errors import SemrecError


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; an explicit 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SemrecError(f"device '{name}' requested but no CUDA GPU is available")
    return dev


def cpu_bf16_native() -> bool:
    """The CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast can pay off."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def bf16_autocast(device: torch.device, requested: bool | None) -> bool:
    """Whether to train or decode under bf16 autocast on `device`. None: on for CUDA, off on a CPU (float32 is
    the CPU default for training until benchmarks/results/cpu_bf16.md shows bf16 within seed noise). True: on
    for CUDA and for a CPU with native bf16; a CPU without it falls back to float32 (emulated bf16 is
    slower). False: off."""
    if requested is False:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(requested) and cpu_bf16_native()


def describe_machine(device: torch.device | str | None = None) -> str:
    """One line naming the machine a result was produced on (CPU model/cores or GPU name)."""
    dev = torch.device(device) if device is not None else resolve_device("auto")
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def git_commit() -> str:
    """The current git commit of the working tree (with '+dirty' if modified), or 'unknown'."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
