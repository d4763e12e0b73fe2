"""Runtime helpers: when training autocasts to bf16."""

import torch

from semrec import runtime


def test_bf16_autocast_defaults_to_cuda_only_and_needs_native_cpu_bf16(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: True)
    assert runtime.bf16_autocast(cuda, None) and runtime.bf16_autocast(cuda, True)
    assert not runtime.bf16_autocast(cuda, False)
    assert not runtime.bf16_autocast(cpu, None) and not runtime.bf16_autocast(cpu, False)
    assert runtime.bf16_autocast(cpu, True)
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: False)
    assert not runtime.bf16_autocast(cpu, True)  # emulated bf16 is slower than float32: fall back
