"""Run folders: config + metrics JSON, CSV tables, PNG plots and a markdown summary.

A :class:`RunFolder` is how every experiment and benchmark writes results. Everything is
written atomically, and finished units of a sweep are stored one file each under
``units/`` so an interrupted sweep resumes without redoing them::

    run = RunFolder("runs/local-convergence", config={"seeds": 100, "steps": 2000})
    for seed in seeds:
        key = f"seed-{seed}"
        if run.has_unit(key):
            continue
        run.save_unit(key, {"corr": ...})
    units = run.load_units()
    run.write_metrics({...}); run.save_figure(fig, "correlation")
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attnlens._io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from attnlens.errors import RunFolderMismatchError

logger = logging.getLogger(__name__)

_KEY = re.compile(r"^[A-Za-z0-9_.=,+-]+$")


def _normalize(obj: Any) -> Any:
    """Round-trip through JSON so configs compare as what is stored on disk."""
    import json

    from attnlens._io import to_json

    return json.loads(to_json(obj))


class RunFolder:
    """A folder holding one run's config, per-unit results, metrics, tables and figures.

    Parameters
    ----------
    path : folder to create or resume.
    config : the run's settings (seeds included). When the folder already holds a
        ``config.json`` that differs, :class:`RunFolderMismatchError` is raised unless
        ``overwrite=True``, which clears the stored units.
    """

    def __init__(self, path: str | os.PathLike, config: Mapping[str, Any], *, overwrite: bool = False):
        self.path = Path(path)
        self.config = _normalize(dict(config))
        self.path.mkdir(parents=True, exist_ok=True)
        cfg_path = self.path / "config.json"
        if cfg_path.exists():
            stored = read_json(cfg_path)
            if stored != self.config:
                if not overwrite:
                    raise RunFolderMismatchError(
                        f"run folder {self.path} holds a different config "
                        f"(stored {stored}, asked {self.config}); use another folder "
                        "or pass overwrite=True (--overwrite) to start over."
                    )
                for unit in self.units_dir.glob("*.json"):
                    unit.unlink()
        atomic_write_json(cfg_path, self.config)
        #: how this process ran the run's sweeps (backend, workers, units, seconds), or None;
        #: set by :meth:`note_execution`, added to ``metrics.json`` and the markdown report
        self.execution: dict[str, Any] | None = None

    @property
    def units_dir(self) -> Path:
        return self.path / "units"

    def _unit_path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(
                f"unit key must use letters, digits and _.=,+- only; got {key!r}."
            )
        return self.units_dir / f"{key}.json"

    def has_unit(self, key: str) -> bool:
        return self._unit_path(key).exists()

    def save_unit(self, key: str, result: Mapping[str, Any]) -> None:
        atomic_write_json(self._unit_path(key), dict(result))

    def load_unit(self, key: str) -> dict[str, Any]:
        return read_json(self._unit_path(key))

    def load_units(self) -> dict[str, dict[str, Any]]:
        if not self.units_dir.exists():
            return {}
        return {p.stem: read_json(p) for p in sorted(self.units_dir.glob("*.json"))}

    def note_execution(self, record: Mapping[str, Any]) -> None:
        """Record one sweep's execution (backend, workers, units run and resumed, seconds).

        Appended to ``execution.json`` (the history of every invocation on this folder) and
        summed into :attr:`execution` (this process's sweeps), which :meth:`write_metrics`
        and :meth:`write_markdown` report. The backend is not part of the config: a run
        started on one backend resumes on another.
        """
        path = self.path / "execution.json"
        history = read_json(path) if path.exists() else []
        atomic_write_json(path, [*history, dict(record)])
        if self.execution is None:
            self.execution = {k: record[k] for k in ("backend", "address", "workers")}
            self.execution.update(units=0, ran=0, resumed=0, failed=0, wall_seconds=0.0,
                                  startup_seconds=0.0, task_seconds=0.0,
                                  task_cpu_seconds=0.0)
        else:
            self.execution.update({k: record[k] for k in ("backend", "address", "workers")})
        for k in ("units", "ran", "resumed", "failed", "wall_seconds", "startup_seconds",
                  "task_seconds", "task_cpu_seconds"):
            self.execution[k] += record.get(k, 0)

    def execution_line(self) -> str:
        """One sentence on how the sweeps of this process ran ("" when none ran)."""
        e = self.execution
        if not e:
            return ""
        return (f"Units: {e['ran']} run on the {e['backend']} backend ({e['workers']} workers, "
                f"{e['wall_seconds']:.1f} s), {e['resumed']} resumed from the run folder.")

    def write_metrics(self, metrics: Mapping[str, Any], name: str = "metrics") -> Path:
        metrics = dict(metrics)
        if self.execution is not None and "execution" not in metrics:
            metrics["execution"] = dict(self.execution)
        return atomic_write_json(self.path / f"{name}.json", metrics)

    def write_table(self, rows: Sequence[Mapping[str, Any]], name: str) -> Path:
        """Write rows (dicts sharing keys) as ``name.csv``."""
        buf = io.StringIO()
        fields: list[str] = []
        for row in rows:
            fields.extend(k for k in row if k not in fields)
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        return atomic_write_text(self.path / f"{name}.csv", buf.getvalue())

    def save_figure(self, fig: Any, name: str, dpi: int = 120) -> Path:
        """Save a matplotlib figure as ``name.png`` (atomically) and close it."""
        return save_figure(fig, self.path / f"{name}.png", dpi)

    def write_markdown(self, text: str, name: str = "report") -> Path:
        line = self.execution_line()
        if line:
            text = text.rstrip("\n") + f"\n\n_{line}_\n"
        return atomic_write_text(self.path / f"{name}.md", text)


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG at ``path`` (atomically) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def markdown_table(rows: Sequence[Mapping[str, Any]], floatfmt: str = ".4g") -> str:
    """Render rows (dicts) as a GitHub markdown table."""
    if not rows:
        return ""
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(fmt(row.get(f)) for f in fields) + " |" for row in rows]
    return "\n".join(lines) + "\n"
