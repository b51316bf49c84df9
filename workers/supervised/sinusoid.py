"""Sinusoid regression, the few-shot regression benchmark of MAML (Finn et al. 2017, sec. 5.1).

A task is a sine wave ``y = A sin(x - φ)`` with amplitude ``A ~ U[0.1, 5.0]`` and phase
``φ ~ U[0, π]``; inputs are ``x ~ U[-5, 5]``.  The paper gives the ranges but no formula; the
sign of the phase is the one of its code (``cbfinn/maml``, ``data_generator.py``,
``generate_sinusoid_batch``: ``amp * np.sin(init_inputs - phase)``).  The learner adapts on ``K``
points of a task (``shots``; the paper's K = 5, 10, 20) and is scored by mean-squared error on
other points of the same task (``queries``; the paper's code draws as many as K).

The meta-train, meta-val and meta-test tasks come from the same distribution (the paper's
tasks are not split); each split draws from its own stream, so the same generator state gives
different tasks for ``train`` and ``test``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from workers.supervised.splits import SUPERVISED_SPLITS, check_split
from workers.tasks import Split, SupervisedTaskDistribution, SupportQuery, Task, TaskFamilyError

__all__ = ["SinusoidRegression", "sinusoid"]

NAME = "sinusoid"


def sinusoid(x: np.ndarray, *, amplitude: float, phase: float) -> np.ndarray:
    """``A sin(x - φ)``, the target of a sinusoid task (float32)."""
    return (amplitude * np.sin(x - phase)).astype(np.float32)


class SinusoidRegression(SupervisedTaskDistribution):
    """Few-shot sinusoid regression (see the module docstring): ``input_shape`` (1,), ``output_dim`` 1.

    Args:
        shots: K, support points per task (an episode's default).
        queries: query points per task (an episode's default).
        amplitude_low, amplitude_high: the range of ``A``.
        phase_low, phase_high: the range of ``φ``.
        input_low, input_high: the range of ``x``.
    """

    name = NAME
    splits: ClassVar[tuple[str, ...]] = SUPERVISED_SPLITS

    def __init__(self, *, shots: int = 10, queries: int = 10, amplitude_low: float = 0.1, amplitude_high: float = 5.0,
                 phase_low: float = 0.0, phase_high: float = math.pi, input_low: float = -5.0,
                 input_high: float = 5.0) -> None:
        if shots < 1 or queries < 1:
            raise TaskFamilyError(f"{NAME}: shots and queries must be >= 1, got {shots}, {queries}")
        for low, high, label in ((amplitude_low, amplitude_high, "amplitude"), (phase_low, phase_high, "phase"),
                                 (input_low, input_high, "input")):
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise TaskFamilyError(f"{NAME}: {label}_low must be < {label}_high, both finite; got {low}, {high}")
        self.shots, self.queries = int(shots), int(queries)
        self.amplitude_low, self.amplitude_high = float(amplitude_low), float(amplitude_high)
        self.phase_low, self.phase_high = float(phase_low), float(phase_high)
        self.input_low, self.input_high = float(input_low), float(input_high)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1,)

    @property
    def output_dim(self) -> int:
        return 1

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shots": self.shots, "queries": self.queries,
                "amplitude": [self.amplitude_low, self.amplitude_high], "phase": [self.phase_low, self.phase_high],
                "input": [self.input_low, self.input_high]}

    def sample_tasks(self, n: int, rng: np.random.Generator, *, split: str = "train") -> list[Task]:
        """``n`` sine waves of ``split`` (amplitude and phase in the task's params)."""
        checked = self._check_split(split)
        n = self._check_n(n)
        # one draw of the caller's generator seeds the split's own stream: train and test differ
        stream = np.random.default_rng(np.random.SeedSequence(int(rng.integers(2**63)),
                                                              spawn_key=(self.splits.index(checked),)))
        amplitudes = stream.uniform(self.amplitude_low, self.amplitude_high, size=n)
        phases = stream.uniform(self.phase_low, self.phase_high, size=n)
        return [Task(NAME, checked, i, {"amplitude": float(a), "phase": float(p)})
                for i, (a, p) in enumerate(zip(amplitudes, phases, strict=True))]

    def episode(self, task: Task, rng: np.random.Generator, *, shots: int | None = None,
                queries: int | None = None) -> SupportQuery:
        """``shots`` support and ``queries`` query points of ``task``, ``x ~ U[input_low, input_high]``
        drawn independently (``x`` is ``[N, 1]``, ``y`` is ``[N, 1]``)."""
        shots = self.shots if shots is None else int(shots)
        queries = self.queries if queries is None else int(queries)
        if shots < 1 or queries < 1:
            raise TaskFamilyError(f"{NAME}: an episode needs shots >= 1 and queries >= 1, got {shots}, {queries}")
        amplitude, phase = self.task_wave(task)
        x = rng.uniform(self.input_low, self.input_high, size=(shots + queries, 1)).astype(np.float32)
        y = sinusoid(x, amplitude=amplitude, phase=phase)
        return SupportQuery(x_support=x[:shots], y_support=y[:shots], x_query=x[shots:], y_query=y[shots:])

    def task_wave(self, task: Task) -> tuple[float, float]:
        """``(amplitude, phase)`` of a sinusoid task, checked."""
        if task.family != NAME:
            raise TaskFamilyError(f"{NAME}: got a task of {task.family!r}; sample tasks from {NAME!r}")
        try:
            return float(task.params["amplitude"]), float(task.params["phase"])
        except (KeyError, TypeError, ValueError):
            raise TaskFamilyError(f"{task.describe()}: a sinusoid task needs float 'amplitude' and 'phase'") from None

    def _check_split(self, split: str) -> Split:
        return check_split(NAME, split)
