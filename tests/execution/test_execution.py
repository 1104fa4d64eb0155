"""The execution layer without Ray: processes vs serial, resuming across backends, faults, errors.

The Ray backend has its own module (one shared local cluster): test_ray_backend.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import execution_units as eu
import pytest
from typer.testing import CliRunner

from attnlens.cli import app
from attnlens.errors import BackendUnavailableError, InvalidParameterError, SweepIncompleteError
from attnlens.execution import Execution, Unit, run_units, use_execution
from attnlens.report import RunFolder

SWEEP, numbers = eu.SWEEP, eu.numbers

def test_a_sweep_resumed_on_processes_gives_the_serial_numbers(tmp_path):
    runner = CliRunner()
    out = tmp_path / "lc"
    first = runner.invoke(app, [*SWEEP, "--out", str(out)])
    assert first.exit_code == 0, first.output
    serial = numbers(out)
    assert json.loads((out / "metrics.json").read_text())["execution"]["backend"] == "serial"
    # two units lost, and a half-written unit file left by a killed writer
    for key in ("seeds-0-1", "seeds-4-5"):
        (out / "units" / f"{key}.json").unlink()
    (out / "units" / ".seeds-0-1.json.x1y2.tmp").write_text('{"seeds": [0, 1], "W": {')

    again = runner.invoke(app, [*SWEEP, "--out", str(out), "--backend", "processes",
                                "--workers", "2"])
    assert again.exit_code == 0, again.output
    assert numbers(out) == serial
    execution = json.loads((out / "metrics.json").read_text())["execution"]
    assert (execution["backend"], execution["workers"]) == ("processes", 2)
    assert (execution["ran"], execution["resumed"]) == (2, 1)
    assert "processes backend (2 workers" in (out / "report.md").read_text()
    history = json.loads((out / "execution.json").read_text())
    assert [h["backend"] for h in history] == ["serial", "processes"]


def test_a_killed_process_worker_leaves_its_unit_pending_until_a_rerun(tmp_path):
    run = RunFolder(tmp_path / "run", {"test": "kill"})
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    units = [Unit(f"seed-{s}", eu.die_on_first_try if s == 1 else eu.quick,
                  {"seed": s, "marker_dir": str(marker_dir)}) for s in range(3)]
    thread, killed = eu.start_killer(marker_dir)
    with pytest.raises(SweepIncompleteError) as err:
        run_units(run, units, desc="kill", progress=False,
                  execution=Execution("processes", workers=2, max_retries=0))
    thread.join()
    assert killed, "the unit never started"
    assert "seed-1" in err.value.pending
    assert "run the same command again" in str(err.value).lower()
    stored = {p.stem for p in run.units_dir.glob("*.json")}
    assert "seed-1" not in stored and stored | set(err.value.pending) == {"seed-0", "seed-1",
                                                                          "seed-2"}
    # the rerun (here on the same backend, with a retry allowed) finishes the pending units
    done = run_units(run, units, desc="kill", progress=False,
                     execution=Execution("processes", workers=2))
    assert done["seed-1"] == {"seed": 1, "killed": True}
    assert {k: v["seed"] for k, v in done.items()} == {"seed-0": 0, "seed-1": 1, "seed-2": 2}


def test_a_unit_error_is_raised_after_the_finished_units_are_stored(tmp_path):
    run = RunFolder(tmp_path / "run", {"test": "error"})
    units = [Unit("ok", eu.quick, {"seed": 0, "marker_dir": ""}), Unit("bad", eu.fails,
                                                                        {"seed": 1})]
    with pytest.raises(ArithmeticError, match="fails on purpose"):
        run_units(run, units, desc="error", progress=False,
                  execution=Execution("processes", workers=2))
    assert run.has_unit("ok") and not run.has_unit("bad")


@pytest.mark.parametrize("backend", ["serial", "processes"])
def test_unit_threads_pin_every_unit_to_that_many_threads(tmp_path, backend):
    """Units compute with one thread each unless ``Execution.unit_threads`` says otherwise;
    the execution record keeps the setting."""
    units = [Unit(f"u{seed}", eu.blas_threads, {"seed": seed}) for seed in (0, 1)]
    for threads in (None, 2):
        run = RunFolder(tmp_path / f"run{threads}", {"test": "threads"})
        out = run_units(run, units, desc="threads", progress=False,
                        execution=Execution(backend, workers=1 if backend == "processes" else
                                            None, unit_threads=threads))
        want = 1 if threads is None else threads
        assert len(out) == 2
        for result in out.values():
            assert result["torch"] == want and result["blas"] and set(result["blas"]) == {want}
        record = json.loads((run.path / "execution.json").read_text())[-1]
        assert record["unit_threads"] == threads
    with pytest.raises(InvalidParameterError, match="unit_threads"):
        Execution(unit_threads=0)


def test_an_unknown_backend_lists_the_choices():
    result = CliRunner().invoke(app, [*SWEEP, "--backend", "dask"])
    assert result.exit_code == 2
    for choice in ("serial", "processes", "ray"):
        assert choice in result.output
    with pytest.raises(InvalidParameterError, match="'serial', 'processes', 'ray'"):
        Execution("dask")
    with pytest.raises(InvalidParameterError, match="--backend ray"):
        Execution("serial", address="auto")


def test_a_missing_ray_install_names_the_fix(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = CliRunner().invoke(app, [*SWEEP, "--backend", "ray", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "pip install 'attnlens[ray]'" in result.output
    assert not (tmp_path / "units").exists()  # failed before any work
    with use_execution(Execution("ray")), pytest.raises(BackendUnavailableError,
                                                        match="not installed"):
        run_units(RunFolder(tmp_path / "r", {}), [Unit("a", eu.fails, {"seed": 0})], desc="x",
                  progress=False)


def test_torch_heads_train_on_the_resolved_device():
    import numpy as np
    import torch

    from attnlens.convex.estimators import NonConvexAttentionClassifier
    from attnlens.execution import resolve_device

    gpu = torch.cuda.is_available()
    assert resolve_device() == ("cuda" if gpu else "cpu") and resolve_device("cpu") == "cpu"
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 4, 3)), rng.integers(0, 2, 40)
    head = NonConvexAttentionClassifier(max_epochs=2, random_state=0, device=resolve_device())
    assert head.fit(X, y).predict(X).shape == (40,)
    assert next(head.network_.parameters()).device.type == resolve_device()
    if not gpu:  # asking for a GPU that is not there is a named parameter error
        with pytest.raises(InvalidParameterError, match="device"):
            NonConvexAttentionClassifier(max_epochs=1, device="cuda").fit(X, y)


def test_workers_die_with_a_killed_driver(tmp_path):
    """SIGKILL the driving process mid-unit: its worker must not go on as an orphan."""
    import signal
    import subprocess
    import sys
    import time

    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    driver = (
        "import sys; sys.path.insert(0, {here!r})\n"
        "import execution_units as eu\n"
        "from attnlens.execution import Execution, Unit, run_units\n"
        "from attnlens.report import RunFolder\n"
        "run = RunFolder({run!r}, {{'test': 'driver'}})\n"
        "run_units(run, [Unit('seed-1', eu.die_on_first_try, {{'seed': 1, 'marker_dir': "
        "{markers!r}}})], desc='d', progress=False, execution=Execution('processes', workers=1))\n"
    ).format(here=str(Path(eu.__file__).parent), run=str(tmp_path / "run"),
             markers=str(marker_dir))
    proc = subprocess.Popen([sys.executable, "-c", driver])
    marker = marker_dir / "1.pid"
    deadline = time.monotonic() + eu.WAIT_TO_BE_KILLED_S
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the unit never started"
    worker = int(marker.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10.0
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    status = Path(f"/proc/{worker}/status")
    alive = status.exists() and "zombie" not in status.read_text()
    assert not alive, "the worker outlived its driver (orphan still computing)"
