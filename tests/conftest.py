"""Shared test set-up: offline hubs, a non-interactive matplotlib, few threads per worker."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_terminal_summary(terminalreporter):
    """How many bad inputs the entry-point test fed (summed over xdist workers' reports)."""
    total, tests = 0, 0
    for reports in terminalreporter.stats.values():
        for rep in reports:
            for key, value in getattr(rep, "user_properties", ()):
                if key == "inputs_tried" and getattr(rep, "when", "") == "teardown":
                    total, tests = total + int(value), tests + 1
    if tests:
        terminalreporter.write_line(
            f"entry-point validation: {total} bad inputs tried in {tests} tests, "
            "each refused with a named InvalidParameterError"
        )
