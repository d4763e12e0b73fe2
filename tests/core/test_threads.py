"""CPU thread defaults: physical cores from the kernel topology, cores / processes, conflict warnings."""

import warnings

import torch

from semrec import threads


def _topology(tmp_path, layout):
    """Fake /sys/devices/system/cpu: layout[cpu] = (package, core)."""
    for cpu, (pkg, core) in layout.items():
        d = tmp_path / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "physical_package_id").write_text(f"{pkg}\n")
        (d / "core_id").write_text(f"{core}\n")
    return tmp_path


def test_physical_cores_counts_hyperthread_siblings_once(tmp_path):
    sys_cpu = _topology(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1), 4: (1, 0), 5: (1, 0)})
    assert threads.physical_cores({0, 1, 2, 3, 4, 5}, sys_cpu) == 3
    assert threads.physical_cores({0, 2}, sys_cpu) == 1  # affinity restricted to one core's two siblings
    assert threads.physical_cores({0, 7}, sys_cpu) == 2  # topology unreadable for cpu7: logical count


def test_default_threads_divides_cores_by_processes():
    assert threads.default_threads(processes=1, cores=8) == 8
    assert threads.default_threads(processes=3, cores=8) == 2
    assert threads.default_threads(processes=4, cores=2) == 1
    assert threads.local_processes({"LOCAL_WORLD_SIZE": "4"}) == 4
    assert threads.local_processes({"LOCAL_WORLD_SIZE": "x"}) == 1
    assert threads.local_processes({}) == 1


def test_conflicts_name_the_fighting_settings():
    assert threads.thread_conflicts(2, {"OMP_NUM_THREADS": "2"}, cores=4, processes=2) == []
    over = threads.thread_conflicts(4, {}, cores=4, processes=2)
    assert len(over) == 1 and "oversubscribed" in over[0] and "OMP_NUM_THREADS=2" in over[0]
    mixed = threads.thread_conflicts(1, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "4"}, cores=4, processes=1)
    assert mixed == ["OMP_NUM_THREADS=1 and MKL_NUM_THREADS=4 differ"]
    assert "OMP_NUM_THREADS=3" in threads.thread_conflicts(1, {"OMP_NUM_THREADS": "3"}, cores=4, processes=1)[0]


def test_configure_respects_omp_and_sets_default_otherwise(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "_warned", False)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert threads.configure_threads(warn=False) == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(threads, "physical_cores", lambda *a, **k: 3)
        assert threads.configure_threads(processes=1, warn=False) == 3
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            torch.set_num_threads(3)
            monkeypatch.setenv("OMP_NUM_THREADS", "3")
            threads.configure_threads()
        assert any("oversubscribed" in str(x.message) for x in w)
    finally:
        torch.set_num_threads(before)
