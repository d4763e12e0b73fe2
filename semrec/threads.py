"""CPU thread defaults: one process per physical core's share, and a warning when thread settings fight.

Oversubscribed OpenMP threads (more runnable threads than cores, e.g. every process of a 2-process run
using all cores, or hyper-threads counted as cores) made a TIGER training step about 9x slower on a
shared 2-core machine. torch's own default is the number of logical CPUs, whatever else runs.

    from semrec.threads import configure_threads
    configure_threads()          # called by the `semrec` command before any work

Rules: an explicit OMP_NUM_THREADS wins; otherwise
torch gets max(1, physical cores available to this process // processes on this machine), where the process
count comes from torchrun's LOCAL_WORLD_SIZE (1 outside torchrun). A warning (once) names the settings that
fight: OMP and MKL thread counts that differ, or threads x local processes above the physical cores.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

_SYS_CPU = Path("/sys/devices/system/cpu")


def available_cpus() -> set[int]:
    """Logical CPU ids this process may run on (its affinity mask; all CPUs where that is unknown)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def physical_cores(cpus: set[int] | None = None, sys_cpu: Path = _SYS_CPU) -> int:
    """Distinct physical cores among `cpus` (default: this process's CPUs), read from the kernel's CPU
    topology (package id, core id); the logical CPU count where the topology is not readable."""
    cpus = available_cpus() if cpus is None else cpus
    cores = set()
    for c in cpus:
        topo = sys_cpu / f"cpu{c}" / "topology"
        try:
            cores.add((int((topo / "physical_package_id").read_text()), int((topo / "core_id").read_text())))
        except (OSError, ValueError):
            return max(1, len(cpus))
    return max(1, len(cores))


def local_processes(env: dict | None = None) -> int:
    """Processes of this job on this machine: torchrun's LOCAL_WORLD_SIZE, else 1."""
    env = os.environ if env is None else env
    try:
        return max(1, int(env.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def default_threads(processes: int | None = None, cores: int | None = None) -> int:
    """Physical cores divided by the processes sharing them, at least 1."""
    processes = local_processes() if processes is None else max(1, processes)
    cores = physical_cores() if cores is None else cores
    return max(1, cores // processes)


def _env_int(env: dict, name: str) -> int | None:
    try:
        v = int(env[name])
        return v if v > 0 else None
    except (KeyError, ValueError):
        return None


def thread_conflicts(threads: int, env: dict | None = None, *, cores: int | None = None,
                     processes: int | None = None) -> list[str]:
    """Reasons (one line each) why `threads` torch threads per process fight the machine or the environment."""
    env = os.environ if env is None else env
    cores = physical_cores() if cores is None else cores
    processes = local_processes(env) if processes is None else processes
    out = []
    omp, mkl = _env_int(env, "OMP_NUM_THREADS"), _env_int(env, "MKL_NUM_THREADS")
    if omp is not None and mkl is not None and omp != mkl:
        out.append(f"OMP_NUM_THREADS={omp} and MKL_NUM_THREADS={mkl} differ")
    if omp is not None and omp != threads:
        out.append(f"torch uses {threads} threads but OMP_NUM_THREADS={omp}")
    if threads * processes > cores:
        out.append(f"{threads} threads x {processes} process(es) > {cores} physical core(s): oversubscribed "
                   f"(set OMP_NUM_THREADS={max(1, cores // processes)})")
    return out


_warned = False


def configure_threads(processes: int | None = None, *, warn: bool = True) -> int:
    """Give torch the default thread count unless OMP_NUM_THREADS chose one; warn (once per process) about
    settings that fight. Returns the thread count in use."""
    import torch  # here, not at module top: `semrec --help` and the CLI's import stay free of torch's start-up

    global _warned
    if _env_int(os.environ, "OMP_NUM_THREADS") is None:
        torch.set_num_threads(default_threads(processes))
    threads = torch.get_num_threads()
    if warn and not _warned:
        for reason in thread_conflicts(threads, processes=processes):
            warnings.warn(f"semrec: CPU threads: {reason}", RuntimeWarning, stacklevel=2)
        _warned = True
    return threads
