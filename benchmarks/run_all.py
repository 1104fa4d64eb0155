"""Run every benchmark in this folder (``make bench``); each writes benchmarks/results/*.json."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    wanted = set(argv)
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in {"run_all.py", "_common.py"})
    for script in scripts:
        if wanted and script.stem not in wanted:
            continue
        print(f"== {script.name}", flush=True)
        saved = sys.argv
        sys.argv = [str(script)]
        try:
            runpy.run_path(str(script), run_name="__main__")
        finally:
            sys.argv = saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
