"""The Ray backend on one local cluster shared by the module (``ray.init(num_cpus=2)``).

Same numbers as serial for a local-convergence sweep, shared arrays put in the object store
once, a worker killed from outside (retried, or left pending until a rerun), and a clear
error for an unreachable ``--address``.
"""

from __future__ import annotations

import json
import socket

import execution_units as eu
import numpy as np
import pytest
from typer.testing import CliRunner

from attnlens.cli import app
from attnlens.errors import SweepIncompleteError
from attnlens.execution import Execution, Unit, run_units
from attnlens.report import RunFolder

ray = pytest.importorskip("ray")

SWEEP, numbers = eu.SWEEP, eu.numbers

#: CPUs of the test cluster (the CI machine has 2 cores)
CPUS = 2


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
    # the helper units live in a test folder that Ray workers cannot import: ship them by value
    ray.cloudpickle.register_pickle_by_value(eu)
    yield
    ray.cloudpickle.unregister_pickle_by_value(eu)
    ray.shutdown()


def test_ray_gives_the_serial_numbers(cluster, tmp_path):
    runner = CliRunner()
    on_ray = runner.invoke(app, [*SWEEP, "--backend", "ray", "--out", str(tmp_path / "ray")])
    assert on_ray.exit_code == 0, on_ray.output
    serial = runner.invoke(app, [*SWEEP, "--out", str(tmp_path / "serial")])
    assert serial.exit_code == 0, serial.output
    assert numbers(tmp_path / "ray") == numbers(tmp_path / "serial")
    execution = json.loads((tmp_path / "ray" / "metrics.json").read_text())["execution"]
    assert (execution["backend"], execution["workers"], execution["ran"]) == ("ray", CPUS, 3)


def test_shared_arrays_go_to_the_object_store_once(cluster, tmp_path, monkeypatch):
    table = np.random.default_rng(0).standard_normal((64, 32))
    units = [Unit(f"seed-{s}", eu.weighted_sum, {"seed": s}) for s in range(6)]
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda obj, **kw: puts.append(obj) or real_put(obj, **kw))
    on_ray = run_units(RunFolder(tmp_path / "ray", {}), units, desc="ray", progress=False,
                       shared={"table": table}, execution=Execution("ray"))
    assert len(puts) == 1 and puts[0] is table
    serial = run_units(RunFolder(tmp_path / "serial", {}), units, desc="serial", progress=False,
                       shared={"table": table})
    assert {k: v["value"] for k, v in on_ray.items()} == {k: v["value"] for k, v in serial.items()}


def _kill_units(marker_dir):
    return [Unit(f"seed-{s}", eu.die_on_first_try if s == 1 else eu.quick,
                 {"seed": s, "marker_dir": str(marker_dir)}) for s in range(4)]


def test_a_killed_ray_worker_is_retried_and_the_sweep_finishes(cluster, tmp_path):
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    thread, killed = eu.start_killer(marker_dir)
    done = run_units(RunFolder(tmp_path / "run", {}), _kill_units(marker_dir), desc="kill",
                     progress=False, execution=Execution("ray", max_retries=1))
    thread.join()
    assert killed
    assert done["seed-1"] == {"seed": 1, "killed": True}  # ran again after the kill
    assert [done[f"seed-{s}"]["seed"] for s in range(4)] == [0, 1, 2, 3]


def test_a_killed_ray_worker_without_retries_leaves_its_unit_for_a_rerun(cluster, tmp_path):
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    run = RunFolder(tmp_path / "run", {})
    thread, killed = eu.start_killer(marker_dir)
    with pytest.raises(SweepIncompleteError) as err:
        run_units(run, _kill_units(marker_dir), desc="kill", progress=False,
                  execution=Execution("ray", max_retries=0))
    thread.join()
    assert killed and err.value.pending == ["seed-1"]
    assert sorted(p.stem for p in run.units_dir.glob("*.json")) == ["seed-0", "seed-2",
                                                                     "seed-3"]
    # the rerun (serial here: any backend resumes) runs only the pending unit
    done = run_units(run, _kill_units(marker_dir), desc="kill", progress=False)
    assert done["seed-1"] == {"seed": 1, "killed": True}
    assert run.execution["ran"] == 3 + 1 and run.execution["failed"] == 1


def test_an_unreachable_address_names_the_fix(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(app, [*SWEEP, "--backend", "ray", "--address",
                                      f"127.0.0.1:{port}", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "ray start --head" in result.output and f"127.0.0.1:{port}" in result.output
    assert not (tmp_path / "units").exists()


#: a tiny real transfer grid: MiniLM on 60 Rotten Tomatoes sentences, d=16, one seed; the torch
#: head's float reductions round differently with 1 and 2 threads
TRANSFER_HEADS = ("linear", "attention_linear", "convex_attention_linear")
TRANSFER_OPTIONS = {"nonconvex_max_epochs": 5, "convex_max_iter": 300, "convex_tol": 1e-3}


def test_transfer_units_are_identical_on_every_backend(cluster, tmp_path):
    """The stored unit files (wall-clock fields aside) are the same on serial, on 2 spawned
    processes and on the Ray cluster, although the driver computes with 2 threads and the
    workers with 1: each unit pins its own threads."""
    import torch
    from threadpoolctl import threadpool_limits

    from attnlens.execution import use_execution
    from attnlens.transfer.features import extract_features
    from attnlens.transfer.runner import run_transfer

    features = extract_features("minilm", "rotten_tomatoes", n_items=60, max_tokens=32,
                                cache_dir=tmp_path / "cache", progress=False)
    stored = {}
    for backend in ("serial", "processes", "ray"):
        run = RunFolder(tmp_path / backend, {})
        before = torch.get_num_threads()
        torch.set_num_threads(2)  # the driver's threads (the default on a 2-core machine)
        try:
            with threadpool_limits(limits=2), use_execution(
                    Execution(backend, workers=None if backend == "serial" else CPUS)):
                run_transfer(features, heads=TRANSFER_HEADS, seeds=[0], d=16, run=run,
                             options=TRANSFER_OPTIONS, progress=False)
        finally:
            torch.set_num_threads(before)
        stored[backend] = {p.name: eu.timeless(json.loads(p.read_text()))
                           for p in sorted(run.units_dir.glob("*.json"))}
        assert run.execution["backend"] == backend and run.execution["ran"] == 3
    assert len(stored["serial"]) == len(TRANSFER_HEADS)
    assert stored["processes"] == stored["serial"]
    assert stored["ray"] == stored["serial"]
