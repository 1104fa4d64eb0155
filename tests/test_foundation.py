"""The shared helpers: validation messages, atomic writes, run folders, the CLI entry point."""

import json
import os
import stat

import numpy as np
import pytest
from typer.testing import CliRunner

from attnlens import __version__
from attnlens._io import atomic_write, atomic_write_json, read_json
from attnlens._results import Status, warn_on_status
from attnlens._validation import (
    check_array,
    check_int,
    check_option,
    check_positive,
    check_random_state,
)
from attnlens.cli import app
from attnlens.errors import ConvergenceWarning, InaccurateSolutionWarning, RunFolderMismatchError
from attnlens.report import RunFolder, markdown_table


def test_check_array_names_parameter_and_value():
    with pytest.raises(ValueError, match=r"X must be an array with 3 dimensions; got shape \(2, 2\)"):
        check_array(np.zeros((2, 2)), "X", ndim=3)
    with pytest.raises(ValueError, match=r"X must be finite; got 1 NaN"):
        check_array([1.0, np.nan], "X")
    with pytest.raises(ValueError, match=r"X must be finite; got 1 NaN or inf"):
        check_array([1.0, np.inf], "X")
    with pytest.raises(ValueError, match="X must be non-empty"):
        check_array(np.zeros((0, 3)), "X")
    with pytest.raises(ValueError, match=r"Z must be an array of shape \(4, \*\); got shape \(3, 2\)"):
        check_array(np.zeros((3, 2)), "Z", shape=(4, None))
    with pytest.raises(TypeError, match="X must be numeric"):
        check_array([["a", "b"]], "X")
    out = check_array([[1, 2]], "X", ndim=2)
    assert out.dtype == np.float64 and out.shape == (1, 2)


def test_scalar_and_option_checks():
    with pytest.raises(ValueError, match=r"norm must be one of 'fro', 'nuc'; got 'l1'"):
        check_option("l1", "norm", ["fro", "nuc"])
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0.0; got -1"):
        check_positive(-1, "beta")
    with pytest.raises(TypeError, match="steps must be a Integral"):
        check_int(1.5, "steps")
    with pytest.raises(TypeError, match="random_state"):
        check_random_state("seed")
    a = check_random_state(3).standard_normal(4)
    b = check_random_state(3).standard_normal(4)
    np.testing.assert_array_equal(a, b)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})

    def boom(handle):
        handle.write(b"partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert read_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # created through open(): 0o666 minus the process umask
    atomic = atomic_write_json(tmp_path / "atomic.json", {"a": 1})
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_run_folder_resumes_and_refuses_other_config(tmp_path):
    run = RunFolder(tmp_path / "run", {"seeds": 3, "arr": np.arange(2)})
    run.save_unit("seed-0", {"corr": np.float64(0.5)})
    again = RunFolder(tmp_path / "run", {"seeds": 3, "arr": [0, 1]})
    assert again.has_unit("seed-0") and not again.has_unit("seed-1")
    assert again.load_units() == {"seed-0": {"corr": 0.5}}
    with pytest.raises(RunFolderMismatchError, match="different config"):
        RunFolder(tmp_path / "run", {"seeds": 4})
    fresh = RunFolder(tmp_path / "run", {"seeds": 4}, overwrite=True)
    assert fresh.load_units() == {}
    with pytest.raises(ValueError, match="unit key"):
        fresh.save_unit("a/b", {})


def test_run_folder_tables_and_figures(tmp_path):
    import matplotlib.pyplot as plt

    run = RunFolder(tmp_path, {})
    run.write_table([{"a": 1, "b": 2.0}, {"a": 3, "c": "x"}], "t")
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "a,b,c"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = run.save_figure(fig, "line")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = markdown_table([{"x": 1.23456, "y": "a"}])
    assert md.splitlines()[2] == "| 1.235 | a |"


def test_status_vocabulary_and_warnings():
    assert {s.value for s in Status} == {"optimal", "optimal_inaccurate", "infeasible", "max_iter"}
    assert json.loads(json.dumps(Status.OPTIMAL)) == "optimal"
    with pytest.warns(ConvergenceWarning, match="iteration limit"):
        warn_on_status(Status.MAX_ITER, 1e-2, 1e-6, "solver")
    with pytest.warns(InaccurateSolutionWarning):
        warn_on_status(Status.OPTIMAL_INACCURATE, 1e-2, 1e-6, "solver")


def test_cli_version_and_help():
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("svm", "convex", "kernel", "demo"):
        assert group in result.output
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_check_array_refuses_values_that_do_not_fit_the_dtype():
    import numpy as np
    import pytest

    from attnlens._validation import check_array
    from attnlens.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="idx must be numeric array-like"):
        check_array([1.0, float("inf")], "idx", dtype=np.int64)
    with pytest.raises(InvalidParameterError, match="idx must be numeric array-like"):
        check_array([10**40], "idx", dtype=np.int64)
