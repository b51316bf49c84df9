"""Algorithms by name: one registration per algorithm.

An algorithm module declares, in one :func:`register` call, everything the engine and the
service need of it:

* its **spec** -- a frozen pydantic model that *is* its configuration (the ``algorithm``
  section of a job spec, the learner's constructor argument, the MLflow params);
* its **learner** -- ``"module:Class"``, imported only where the learner runs (the service
  never imports it, so an algorithm module that keeps torch out of its top level keeps the
  API process free of torch);
* its **iteration plan** -- which phases a meta-iteration collects, with which parameters, and
  where the learner's inner step goes (:mod:`algorithms.plans`);
* its **meta-test** -- the plan that adapts a trained model to a new task (``steps`` rounds);
* the **metrics** it reports, in the order people read them.

This module imports pydantic and nothing heavy: the job contract builds its ``algorithm`` union
from :func:`specs`, and a process that runs no learner (the API) imports only this.

Plugins: modules named in ``METARL_PLUGINS`` (comma-separated) are imported by
:func:`load_plugins`; each registers its algorithms (or task distributions) at import.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from algorithms.plans import IterationPlan

#: Environment variable naming modules to import for their registrations.
PLUGINS_ENV = "METARL_PLUGINS"


class Spec(BaseModel):
    """Base of every configuration model: frozen, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AlgorithmSpec(Spec):
    """Base of an algorithm's spec: ``name`` is the registered name (a ``Literal`` in each
    subclass, the discriminator of the job spec's ``algorithm`` union)."""

    name: str


class AdvantageSpec(Spec):
    """How returns become advantages (Schulman et al. 2016's GAE; γ, λ)."""

    gamma: float = Field(0.99, ge=0, le=1)
    gae_lambda: float = Field(1.0, ge=0, le=1)
    normalize: bool = True


@dataclass(frozen=True)
class Metric:
    """A metric an algorithm reports, as the CLI and the API show it.

    Attributes:
        key: the logged name (``meta/return_post``).
        label: what people read (``return after adaptation``).
        fmt: Python format spec of a value.
    """

    key: str
    label: str
    fmt: str = ".2f"


@dataclass(frozen=True)
class Algorithm:
    """One registered algorithm (see the module docstring).

    Attributes:
        name: the registered name; equals ``spec``'s ``name`` literal.
        spec: the configuration model (a subclass of :class:`AlgorithmSpec`).
        learner: ``"module:Class"`` of the learner; ``Class(policy_spec, spec, advantage=...,
            seed=..., device=...)`` with the :class:`algorithms.policies.PolicySpec` of the job's
            policy on its task family.
        plan: the spec -> the phases of one meta-iteration.
        adaptation: ``(spec, steps)`` -> the phases that adapt to a task at meta-test
            (``steps`` rounds of data and inner step, then the evaluation phase).
        metrics: the headline metrics, in display order (a job shows those it logged).
        kind: the task distributions it trains on: ``"rl"`` task families or ``"supervised"``.
        summary: one line for listings.
        policy: ``"module:function"`` mapping the job's policy spec (the MLP's
            :class:`~algorithms.policies.PolicySpec` on the family) and the algorithm's spec to the
            spec of the policy this algorithm trains (RL²'s recurrent policy); None: the MLP's.
            Imported where the policy is built.
        sampler: ``"module:function"`` building what collects a phase's data on a rollout
            worker: ``function(family, policy_spec, spec, *, envs_per_task, seed)`` returning an
            object with ``sample(tasks, params, *, episodes_per_task, deterministic=False)``,
            ``last_stats`` and ``close()``; None: the episode sampler
            (:class:`workers.sampler.Sampler`).  Imported where sampling runs.
        check_job: called with a validated job spec; raises ``ValueError`` (the API's 422,
            naming the field) for a combination the algorithm cannot run.
    """

    name: str
    spec: type[AlgorithmSpec]
    learner: str
    plan: Callable[[Any], IterationPlan]
    adaptation: Callable[[Any, int], IterationPlan]
    metrics: tuple[Metric, ...] = ()
    kind: Literal["rl", "supervised"] = "rl"
    summary: str = ""
    policy: str | None = None
    sampler: str | None = None
    check_job: Callable[[Any], None] | None = None

    def learner_class(self) -> type:
        """Import and return the learner class (heavy: torch)."""
        return _resolve(self.learner)

    def sampler_factory(self) -> Callable[..., Any] | None:
        """The registered sampler factory (imports it), or None for the episode sampler."""
        return None if self.sampler is None else _resolve(self.sampler)

    def policy_spec(self, base: Any, spec: AlgorithmSpec) -> Any:
        """The spec of the policy this algorithm trains, from the job's MLP policy spec ``base``."""
        return base if self.policy is None else _resolve(self.policy)(base, spec)


def _resolve(ref: str) -> Any:
    """The object a ``"module:attr"`` reference names (imports the module)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


_ALGORITHMS: dict[str, Algorithm] = {}
_LISTENERS: list[Callable[[], None]] = []


class UnknownAlgorithm(LookupError):
    """No algorithm is registered under the name (the message lists those that are)."""


def register(algorithm: Algorithm) -> Algorithm:
    """Register ``algorithm`` (again: replaced); the job contract's union follows."""
    literal = algorithm.spec.model_fields["name"].annotation
    if getattr(literal, "__args__", None) != (algorithm.name,):
        raise ValueError(f"{algorithm.spec.__name__}.name must be Literal[{algorithm.name!r}]")
    _ALGORITHMS[algorithm.name] = algorithm
    for listener in list(_LISTENERS):
        listener()
    return algorithm


def on_register(listener: Callable[[], None]) -> None:
    """Call ``listener`` after every registration (the job contract rebuilds its union)."""
    _LISTENERS.append(listener)


def get(name: str) -> Algorithm:
    """The algorithm registered as ``name``."""
    ensure_loaded()
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise UnknownAlgorithm(f"unknown algorithm {name!r}; registered: {names()}") from None


def names() -> list[str]:
    ensure_loaded()
    return sorted(_ALGORITHMS)


def algorithms() -> list[Algorithm]:
    ensure_loaded()
    return [_ALGORITHMS[n] for n in sorted(_ALGORITHMS)]


def specs() -> tuple[type[AlgorithmSpec], ...]:
    """Every registered spec model, by name."""
    return tuple(a.spec for a in algorithms())


def make_learner(spec: AlgorithmSpec, policy_spec: Any, *, advantage: AdvantageSpec | None = None, seed: int = 0,
                 device: Any = "cpu") -> Any:
    """The learner of ``spec``'s algorithm (imports it)."""
    cls = get(spec.name).learner_class()
    return cls(policy_spec, spec, advantage=advantage or AdvantageSpec(), seed=seed, device=device)


def lazy_names(module: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` (PEP 562) that takes unknown names from ``module`` on first
    use: an algorithm's light package re-exports its learner's names without importing torch."""

    def __getattr__(name: str) -> Any:
        try:
            return getattr(importlib.import_module(module), name)
        except AttributeError:
            raise AttributeError(f"module {module.rsplit('.', 1)[0]!r} has no attribute {name!r}") from None

    return __getattr__


_BUILTINS = ("algorithms.maml", "algorithms.reptile", "algorithms.multitask", "algorithms.rl2",
             "algorithms.supervised.sl_maml", "algorithms.supervised.anil", "algorithms.supervised.meta_sgd",
             "algorithms.supervised.sl_reptile", "algorithms.supervised.protonet", "algorithms.supervised.matching",
             "algorithms.supervised.meta_lstm", "algorithms.learned_opt.lstm_optimizer_job")
_loaded = False


def ensure_loaded() -> None:
    """Import the built-in algorithms and the ``METARL_PLUGINS`` modules, once per process (their
    imports register algorithms and task distributions)."""
    global _loaded  # noqa: PLW0603 - the registry is process-wide by nature (imports are)
    if not _loaded:
        _loaded = True
        for module in _BUILTINS:
            importlib.import_module(module)
        load_plugins()


def load_plugins(modules: str | None = None) -> list[str]:
    """Import the modules listed in ``modules`` (default: ``$METARL_PLUGINS``, comma-separated);
    returns their names.  A module that fails to import raises, naming the variable."""
    raw = os.environ.get(PLUGINS_ENV, "") if modules is None else modules
    loaded = []
    for name in (m.strip() for m in raw.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"{PLUGINS_ENV} names {name!r}, which cannot be imported: {exc}") from exc
        loaded.append(name)
    return loaded
