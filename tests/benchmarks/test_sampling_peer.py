"""``python benchmarks/sampling.py`` after the two commands (no ``rllib`` extra): it measures
everything but the RLlib peer and says why the peer is missing and how to get it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_without_rllib_the_peer_is_skipped_with_the_command_that_installs_it():
    if importlib.util.find_spec("tree") is not None and importlib.util.find_spec("ray.rllib") is not None:
        pytest.skip("the rllib extra is installed here (make bench): the peer runs")
    # in a process of its own: the benchmark sets its thread variables when imported
    why = subprocess.run([sys.executable, "-c", "import sampling; print(sampling._rllib_missing())"],
                         cwd=BENCHMARKS, capture_output=True, text=True, check=True).stdout.strip()
    assert why.startswith("skipped: RLlib is not installed")
    assert "make bench" in why and ".[rllib]" in why
