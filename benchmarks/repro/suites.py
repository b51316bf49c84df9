"""The suites: each paper's setting for one task family (the job spec, built from a
``workers/presets/*.json`` spec, and the paper's meta-test protocol), the papers' numbers with
their citations, the acceptance targets and the rows of the results table."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: Evaluation seed = training seed + this (fresh tasks, resets and action noise: an evaluation never
#: reuses the training seeds).
EVAL_SEED_OFFSET = 10_000
#: validation tasks of checkpoint selection are drawn with seed ``training seed + SELECTION_SEED_OFFSET``
SELECTION_SEED_OFFSET = 20_000
#: the evaluated variant of the MAML checkpoint chosen on validation tasks
SELECTED = "maml-selected"
#: ``step`` of an estimate taken after a whole RL² trial: the last entry of the per-step curve (the
#: evaluation episodes after the K adaptation episodes), whatever K is
AFTER_TRIAL = -1

Metric = Literal["return", "success"]

# ---- what the papers report -----------------------------------------------------------------

MAML_NAV = (
    "Finn, Abbeel & Levine 2017, Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks "
    "(ICML), appendix Table 4: 2D navigation, MAML, return after 0/1/2/3 gradient steps "
    "(horizon 100, meta-batch 20, 20 trajectories per task, alpha=0.1, TRPO, 2x100 ReLU, linear "
    "feature baseline)"
)
MAML_CHEETAH = (
    "Finn, Abbeel & Levine 2017, Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks "
    "(ICML), appendix Table 5: HalfCheetah forward/backward, MAML, return after 0/1/2/3 gradient "
    "steps (horizon 200, meta-batch 40, 20 rollouts per task)"
)
MAML_META_TEST = (
    "Finn et al. 2017, sec. 5.3 and appendix: meta-test adaptation with up to 3 gradient updates "
    "of 40 trajectories each, step size 0.1 for the first update and 0.05 for the later ones"
)
METAWORLD_V1 = (
    "Yu et al. 2019, Meta-World: A Benchmark and Evaluation for Multi-Task and Meta Reinforcement "
    "Learning (CoRL), Table 1: MAML meta-test success rate, ML10 31.6%, ML45 39.9% (v1 envs, "
    "garage implementation)"
)
METAWORLD_V3 = (
    "arXiv 2511.12383 (Meta-World v3 envs): MAML-TRPO on ML10, 21.0% train / 13.2% test success; "
    "ML10 budget 20M env steps (2M per task)"
)
METAWORLD_V1_RL2 = (
    "Yu et al. 2019, Meta-World: A Benchmark and Evaluation for Multi-Task and Meta Reinforcement "
    "Learning (CoRL), Table 1 and sec. 5: ML10 meta-test success rate, RL2 35.8%, MAML 31.6% "
    "(v1 envs, garage implementation)"
)


@dataclass(frozen=True)
class Published:
    """A number from a paper, keyed like our estimates (variant, split, metric, step).

    ``comparable`` is False for a number kept for context only (another benchmark)."""

    variant: str
    split: str
    metric: Metric
    step: int
    value: float
    setting: str
    citation: str
    comparable: bool = True


@dataclass(frozen=True)
class Target:
    """An acceptance target on the mean over seeds of one estimate."""

    variant: str
    split: str
    metric: Metric
    step: int
    op: Literal[">=", ">"]
    value: float
    source: str = "acceptance target"  # another source (a "goal") is named in the table

    def met(self, mean: float | None) -> bool | None:
        if mean is None or not math.isfinite(mean):
            return None
        return mean >= self.value if self.op == ">=" else mean > self.value


@dataclass(frozen=True)
class Headline:
    """A row of the results table; ``step`` indexes the per-step curve (:data:`AFTER_TRIAL`: its
    last entry)."""

    variant: str
    split: str
    metric: Metric
    step: int
    label: str


# ---- suites -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Early stopping on validation tasks, chosen before any test task is seen.

    The MAML checkpoints of every ``every`` iterations (and the last one) are meta-tested with
    the suite's protocol on ``tasks`` validation tasks: the ``train`` split drawn with seed
    ``training seed + SELECTION_SEED_OFFSET``, never the test tasks.  The checkpoint with the best
    mean return after 1..n inner steps (the earliest on a tie) is then meta-tested on the test
    tasks as the variant ``maml-selected``, beside the final model (``maml``).
    """

    every: int
    tasks: int


def _holds(tree: Any, path: Sequence[str], value: Any) -> bool:
    """Whether the nested dict ``tree`` has ``value`` at ``path``."""
    node = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return bool(node == value)


@dataclass(frozen=True)
class Departure:
    """A job-spec field the suite sets to something other than the paper's value."""

    field: str  # dotted job-spec path, as in ``--set``
    value: Any
    paper: str  # what the paper has there
    why: str

    def applies_to(self, spec: dict[str, Any] | None) -> bool:
        """Whether a run trained with ``spec`` (a result's ``spec``) has this departure."""
        return _holds(spec, self.field.split("."), self.value)

    def describe(self) -> str:
        return f"`{self.field}={self.value}` where the paper has {self.paper} ({self.why})"


@dataclass(frozen=True)
class Protocol:
    """The meta-test protocol of a suite.

    Attributes:
        episodes: ``K``, episodes per adaptation step.
        steps: ``n``, inner steps.
        tasks: test (and train) tasks per evaluation.
        later_lr: step size of steps 2..n (None: the model's inner_lr).
        splits: task splits evaluated (``train`` only where the benchmark has its own).
        metric: what the suite reports: return (per step) or success (pre/post).
        sensitivity_later_lrs: other step sizes of steps 2..n to meta-test the same MAML models
            with, reported beside the protocol's (variant ``maml-later-lr-<lr>``), never as the
            paper's number.
        selection: early stopping on validation tasks (variant ``maml-selected``), or None.
    """

    episodes: int
    steps: int
    tasks: int
    later_lr: float | None
    splits: tuple[str, ...]
    metric: Metric
    sensitivity_later_lrs: tuple[float, ...] = ()
    selection: Selection | None = None


#: the suffix of a trained variant meta-tested with sampled evaluation actions (:attr:`Suite.sampled_eval`)
SAMPLED = "-sampled"


def sampled_variant(variant: str) -> str:
    """The evaluated variant name of ``variant``'s models meta-tested with sampled evaluation
    actions (garage's ``MetaEvaluator``) where the family's protocol takes the mean."""
    return f"{variant}{SAMPLED}"


def sensitivity_variant(later_lr: float) -> str:
    """The evaluated variant name of the MAML models meta-tested with ``later_lr``."""
    return f"maml-later-lr-{later_lr:g}"


@dataclass(frozen=True)
class Variant:
    """A trained variant of a suite: the job it trains (a preset and overrides of it) and how it
    is meta-tested.

    Attributes:
        name: the variant's key in state, results and ``--set NAME:KEY=VALUE`` (``maml``, ``rl2``).
        label: what people read (``MAML``, ``RL²``).
        preset: the ``workers/presets`` spec it starts from.
        spec: overrides of the preset (nested dicts replace leaves; a None leaf removes the key).
        protocol: its meta-test protocol; None: the suite's.
        adaptation: ``gradient`` (inner steps on K episodes) or ``trial`` (RL²: K episodes of one
            trial build the hidden state; its per-step curve is per episode of the trial).
    """

    name: str
    label: str
    preset: str
    spec: dict[str, Any] = field(default_factory=dict)
    protocol: Protocol | None = None
    adaptation: Literal["gradient", "trial"] = "gradient"


def split_override(item: str) -> tuple[str | None, str]:
    """``"rl2:algorithm.lr=1e-4"`` -> ``("rl2", "algorithm.lr=1e-4")``; an override without a
    ``VARIANT:`` prefix applies to every variant (``(None, item)``)."""
    key, sep, _ = item.partition("=")
    variant, colon, path = key.partition(":")
    if not sep or not colon:
        return None, item
    return variant.strip(), item[len(key) - len(path):].lstrip()


def variant_overrides(overrides: Sequence[str], variant: str) -> list[str]:
    """The ``--set`` items that apply to ``variant``, without their prefix."""
    out = []
    for item in overrides:
        target, rest = split_override(item)
        if target is None or target == variant:
            out.append(rest)
    return out


def variant_iterations(iterations: int | Mapping[str, int], variant: str) -> int:
    """A variant's iterations: one count for all, or per trained variant (the MAML models'
    evaluated variants, ``maml-selected`` and the sensitivity ones, are MAML's)."""
    if isinstance(iterations, int):
        return iterations
    return int(iterations[variant if variant in iterations else "maml"])


def env_steps_per_iteration(spec: Any) -> int:
    """Env steps one meta-iteration of a job samples at most (every episode to the horizon): phases
    of its plan x meta-batch x episodes per task x horizon (MAML with one inner step: 2 phases;
    RL² and multi-task PG: 1)."""
    from algorithms import registry
    from workers.envs import family_parameters

    phases = len(registry.get(spec.algorithm.name).plan(spec.algorithm).phases)
    horizon = spec.task_family.max_episode_steps or family_parameters(spec.task_family.name)["max_episode_steps"]
    return phases * spec.meta_batch_size * spec.episodes_per_task * int(horizon)


def format_steps(steps: int | float) -> str:
    """``20000000`` -> ``20M``, ``320000`` -> ``320k``."""
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if steps >= scale:
            return f"{steps / scale:g}{unit}"
    return f"{steps:g}"


@dataclass(frozen=True, kw_only=True)
class Suite:
    """A paper's setting for one task family.

    Attributes:
        name: the ``--suite`` value.
        title: what it is, for plots and the table.
        preset: the ``workers/presets`` spec of the MAML variant (suites without ``trained``).
        spec: overrides of the preset (nested dicts replace leaves).
        protocol: the meta-test protocol (of every variant without its own).
        baselines: also train multi-task PG and evaluate the random initialisation.
        published: the papers' numbers.
        targets: acceptance targets.
        headlines: rows of the results table.
        departures: where the suite's own spec departs from the paper's setting, and why; the
            results table's note states each one a result's run was trained with.
        trained: the trained variants, each with its own job (a suite comparing algorithms);
            empty: MAML from ``preset`` and ``spec`` (and multi-task PG with ``baselines``).
        budget: env steps each trained variant gets (``--env-steps`` overrides it); a variant's
            iterations are the budget over its env steps per iteration.  None: every variant runs
            ``--iterations`` (default the paper's).
        sampled_eval: also meta-test every trained variant's models with sampled evaluation
            actions (variant ``<name>-sampled``): the protocol of garage's ``MetaEvaluator``,
            behind the Meta-World paper's figures, beside Meta-World's own (the mean action).
    """

    name: str
    title: str
    protocol: Protocol
    preset: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    baselines: bool = False
    published: tuple[Published, ...] = ()
    targets: tuple[Target, ...] = ()
    headlines: tuple[Headline, ...] = ()
    departures: tuple[Departure, ...] = ()
    trained: tuple[Variant, ...] = ()
    budget: int | None = None
    sampled_eval: bool = False

    def __post_init__(self) -> None:
        if bool(self.trained) != (self.budget is not None):
            raise ValueError(f"suite {self.name}: variants with their own jobs (trained) go with an env-step budget")

    @property
    def variant_specs(self) -> tuple[Variant, ...]:
        """The trained variants with their jobs."""
        if self.trained:
            return self.trained
        maml = Variant("maml", "MAML", self.preset, self.spec)
        if not self.baselines:
            return (maml,)
        return maml, Variant("multitask-pg", "multi-task PG", self.preset, self.spec)

    @property
    def variants(self) -> tuple[str, ...]:
        """Trained variants (each a job per seed); ``random-init`` is evaluated untrained."""
        return tuple(v.name for v in self.variant_specs)

    def variant(self, name: str) -> Variant:
        """The trained variant ``name``; the MAML models' other evaluated variants are MAML's, a
        sampled-actions variant is its trained variant's."""
        trained = {v.name: v for v in self.variant_specs}
        if name in trained:
            return trained[name]
        if (base := self._sampled_base(name)) is not None:
            return trained[base]
        if name in self.evaluated and "maml" in trained:
            return trained["maml"]
        raise ValueError(f"no training job for variant {name!r}")

    @property
    def evaluated(self) -> tuple[str, ...]:
        """Evaluated variants: the trained ones, the MAML checkpoint chosen on validation tasks
        (with a selection), ``random-init`` with baselines, the final MAML models again under
        each sensitivity step size, and with ``sampled_eval`` every trained variant again with
        sampled evaluation actions."""
        out: tuple[str, ...] = ()
        for v in self.variants:
            out = (*out, v, SELECTED) if v == "maml" and self.protocol.selection else (*out, v)
        if self.baselines:
            out = (*out, "random-init")
        out = (*out, *(sensitivity_variant(lr) for lr in self.protocol.sensitivity_later_lrs))
        return (*out, *(sampled_variant(v) for v in self.variants)) if self.sampled_eval else out

    def _sampled_base(self, variant: str) -> str | None:
        """The trained variant of a sampled-actions variant (``rl2-sampled``: ``rl2``), else None."""
        base = variant.removesuffix(SAMPLED)
        return base if self.sampled_eval and base != variant and base in self.variants else None

    def trained_of(self, variant: str) -> str:
        """The trained variant whose models ``variant`` evaluates (a sensitivity variant: MAML's)."""
        if variant in self.variants:
            return variant
        return self._sampled_base(variant) or "maml"

    def samples_eval_actions(self, variant: str) -> bool:
        """``variant`` is meta-tested with sampled evaluation actions."""
        return self._sampled_base(variant) is not None

    def protocol_of(self, variant: str) -> Protocol:
        """The meta-test protocol of an evaluated variant."""
        return self.variant(variant).protocol or self.protocol

    def later_lr(self, variant: str) -> float | None:
        """Step size of inner steps 2..n when meta-testing ``variant``."""
        for lr in self.protocol.sensitivity_later_lrs:
            if variant == sensitivity_variant(lr):
                return lr
        return self.protocol_of(variant).later_lr

    @property
    def paper_iterations(self) -> int:
        return int(self.spec.get("iterations") or _preset(self.preset)["iterations"])

    def merged_spec(self, variant: str) -> dict[str, Any]:
        """``variant``'s preset with the suite's settings (no name, seed or overrides)."""
        v = self.variant(variant)
        return _merge(_preset(v.preset), v.spec)

    def job_spec(self, variant: str, *, seed: int, iterations: int | None, overrides: Sequence[str] = ()) -> Any:
        """The validated :class:`workers.contract.JobSpec` of ``variant`` for ``seed`` (``iterations``
        None: the preset's); ``overrides`` are ``--set`` items (``VARIANT:KEY=VALUE`` for one
        variant only)."""
        from service.presets import apply_overrides
        from workers.contract import JobSpec

        if variant not in self.variants:
            raise ValueError(f"no training job for variant {variant!r}")
        spec = self.merged_spec(variant)
        if variant == "multitask-pg":
            # the non-meta baseline: PPO on the union of the tasks, fine-tuned with MAML's inner
            # step; same meta-batch, episodes and iterations, hence the same env-step budget
            spec["algorithm"] = {"name": "multitask-pg", "inner_lr": spec["algorithm"].get("inner_lr", 0.1)}
        name = f"reproduce-{self.name}-{variant}-s{seed}"
        spec.update(name=name, register_as=name, seed=seed)
        if iterations is not None:
            spec["iterations"] = iterations
        return JobSpec.model_validate(apply_overrides(spec, variant_overrides(overrides, variant)))

    def iterations_for(self, variant: str, *, env_steps: int, overrides: Sequence[str] = ()) -> int:
        """Iterations of ``variant`` on a budget of ``env_steps``: whole iterations of its env steps
        per iteration (:func:`env_steps_per_iteration`, after ``overrides``)."""
        per = env_steps_per_iteration(self.job_spec(variant, seed=0, iterations=None, overrides=overrides))
        if env_steps < per:
            raise ValueError(f"{variant}: a budget of {env_steps} env steps is less than one iteration ({per})")
        return env_steps // per


def _nav_curve(
    label: str, sensitivity_later_lrs: Sequence[float] = (), *, selection: bool = False
) -> tuple[Headline, ...]:
    def steps(k: int) -> str:
        return f"{k} gradient step{'s' if k != 1 else ''}"

    rows = []
    if selection:
        rows += [Headline(SELECTED, "test", "return", k,
                          f"{label}, return after {steps(k)}, checkpoint chosen on validation tasks") for k in range(4)]
    rows += [Headline("maml", "test", "return", k,
                      f"{label}, return after {steps(k)}{', final iteration' if selection else ''}") for k in range(4)]
    rows += [Headline(sensitivity_variant(lr), "test", "return", k,
                      f"{label}, return after {k} gradient steps, later α = {lr:g} "
                      "(sensitivity, not the paper's protocol)")
             for lr in sensitivity_later_lrs for k in (2, 3)]
    return tuple(rows)


def paper_variant(variant: str) -> str:
    """The variant a paper's number is compared with: the chosen checkpoint is a MAML model."""
    return "maml" if variant == SELECTED else variant


def _published_curve(values: Sequence[float], *, setting: str, citation: str) -> tuple[Published, ...]:
    return tuple(Published("maml", "test", "return", k, v, setting, citation) for k, v in enumerate(values))


def _metaworld_headlines(variants: Sequence[str], label: str) -> tuple[Headline, ...]:
    names = {"maml": "MAML", "multitask-pg": "multi-task PG", "random-init": "random init"}
    rows: list[Headline] = []
    for split in ("test", "train"):
        rows.append(Headline("maml", split, "success", 0, f"{label} {split} success before adaptation (MAML)"))
        rows += [Headline(v, split, "success", 1, f"{label} {split} success after adaptation ({names[v]})")
                 for v in variants]
    return tuple(rows)


#: Meta-World's protocol (``metaworld.evaluation.metalearning_evaluation``): one adaptation step
#: on 10 episodes, then 3 deterministic evaluation episodes per goal (evaluate.py applies them).
_ML1_PROTOCOL = Protocol(episodes=10, steps=1, tasks=50, later_lr=None, splits=("test", "train"), metric="success")
#: ML10's: the same on 100 tasks of each split (of 250 test and 500 train goals)
_ML10_PROTOCOL = Protocol(episodes=10, steps=1, tasks=100, later_lr=None, splits=("test", "train"), metric="success")
#: Finn et al. 2017's locomotion meta-test: 3 gradient steps of 40 episodes, α = 0.1 then 0.05
_CHEETAH_PROTOCOL = Protocol(episodes=40, steps=3, tasks=20, later_lr=0.05, splits=("test",), metric="return")
#: RL²'s meta-test on Meta-World: the trial's first 9 episodes adapt the hidden state and each of
#: the 3 deterministic evaluation episodes is the trial's 10th -- the trials it trained on have 10
#: episodes (the presets' episodes_per_trial), so the evaluated episode is one it learned to play
_ML1_RL2_PROTOCOL = Protocol(episodes=9, steps=1, tasks=50, later_lr=None, splits=("test", "train"), metric="success")
_ML10_RL2_PROTOCOL = Protocol(episodes=9, steps=1, tasks=100, later_lr=None, splits=("test", "train"),
                              metric="success")


def _rl2_headlines(label: str, protocol: Protocol, *, sampled: bool) -> tuple[Headline, ...]:
    """RL² beside MAML: after adaptation (RL²: the evaluation episodes after its trial; MAML: after
    each of its inner steps), then before it (RL²: the trial's first episode; MAML: θ's episodes)."""
    m = protocol.metric

    def steps(k: int) -> str:
        return f"{k} gradient step{'s' if k != 1 else ''}"

    rows: list[Headline] = []
    for split in protocol.splits:
        rows.append(Headline("rl2", split, m, AFTER_TRIAL, f"{label} {split} {m} after adaptation (RL²)"))
        if sampled:
            rows.append(Headline(sampled_variant("rl2"), split, m, AFTER_TRIAL,
                                 f"{label} {split} {m} after adaptation, sampled actions (RL²)"))
        if protocol.steps == 1:
            rows.append(Headline("maml", split, m, 1, f"{label} {split} {m} after adaptation (MAML)"))
            if sampled:
                rows.append(Headline(sampled_variant("maml"), split, m, 1,
                                     f"{label} {split} {m} after adaptation, sampled actions (MAML)"))
        else:
            rows += [Headline("maml", split, m, k, f"{label} {split} {m} after {steps(k)} (MAML)")
                     for k in sorted({1, protocol.steps})]
        rows.append(Headline("rl2", split, m, 0,
                             f"{label} {split} {m} on the trial's first episode, before adaptation (RL²)"))
        rows.append(Headline("maml", split, m, 0, f"{label} {split} {m} before adaptation (MAML)"))
    return tuple(rows)


def _rl2_suite(name: str, title: str, label: str, *, rl2_preset: str, maml: Variant, budget: int,
               protocol: Protocol, rl2_protocol: Protocol | None = None, published: tuple[Published, ...] = (),
               targets: tuple[Target, ...] = (), sampled_eval: bool = True) -> Suite:
    """RL² against MAML on one family with the same env-step budget, each meta-tested with its
    own kind of adaptation (RL²: ``rl2_protocol``, default the suite's ``protocol``), and on
    Meta-World with sampled evaluation actions too (``sampled_eval``)."""
    rl2 = Variant("rl2", "RL²", rl2_preset, protocol=rl2_protocol, adaptation="trial")
    return Suite(name=name, title=title, protocol=protocol, trained=(rl2, maml), budget=budget, published=published,
                 targets=targets, headlines=_rl2_headlines(label, protocol, sampled=sampled_eval),
                 sampled_eval=sampled_eval)

SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            name="navigation2d",
            title="2D navigation (MAML-TRPO)",
            preset="navigation2d-maml",
            # 100 meta-iterations: the authors' own run (cbfinn/maml_rl, maml_examples/maml_trpo_point.py,
            # n_itr=100); pytorch-maml-rl's 500 overshoot after 2-3 steps (docs/results.md)
            spec={"iterations": 100},
            # beside the paper's protocol, later α = 0.025: with 0.05 our models overshoot on steps 2-3
            # (docs/results.md)
            # early stopping: the outer loss only scores the first inner step, and with more
            # iterations the policy's std shrinks and steps 2-3 overshoot (docs/results.md)
            protocol=Protocol(episodes=40, steps=3, tasks=40, later_lr=0.05, splits=("test",), metric="return",
                              sensitivity_later_lrs=(0.025,), selection=Selection(every=10, tasks=40)),
            published=_published_curve([-40.41, -11.68, -3.33, -3.23], setting="Finn et al. 2017, Table 4",
                                       citation=MAML_NAV),
            targets=tuple(Target(v, "test", "return", k, ">=", value) for v in (SELECTED, "maml")
                          for k, value in ((1, -12.85), (3, -4.5))),
            headlines=_nav_curve("2D navigation", (0.025,), selection=True),
        ),
        Suite(
            name="halfcheetah-dir",
            title="HalfCheetah forward/backward (MAML-TRPO)",
            preset="halfcheetah-vel-maml",
            # the paper's rllab cheetah: 0.01 s per env step (200 steps = 2 s) and the torso's
            # position observed; gymnasium's defaults (0.05 s, no position) learned less (docs/results.md).
            # tanh hidden layers, not the paper's ReLU: see `departures` (docs/results.md)
            spec={"task_family": {"name": "halfcheetah-dir", "params": {"observe_position": True, "frame_skip": 1}},
                  "policy": {"activation": "tanh"}},
            protocol=Protocol(episodes=40, steps=3, tasks=20, later_lr=0.05, splits=("test",), metric="return"),
            published=_published_curve([-50.69, 293.19, 313.48, 315.65], setting="Finn et al. 2017, Table 5",
                                       citation=MAML_CHEETAH),
            targets=(Target("maml", "test", "return", 1, ">=", 260.0),),
            headlines=_nav_curve("HalfCheetah fwd/back"),
            departures=(
                Departure("policy.activation", "tanh", paper="ReLU",
                          why="pytorch-maml-rl's halfcheetah-dir setting has tanh; with ReLU most action means "
                              "left the action bounds, where actions are clipped, and the return after 1 step "
                              "stayed near 110 in 500 iterations: docs/results.md and "
                              "`benchmarks/adaptation_probe.py`"),
            ),
        ),
        Suite(
            name="ml1-reach",
            title="Meta-World ML1 reach-v3 (MAML-TRPO vs multi-task PG vs random init)",
            preset="ml1-reach-maml",
            spec={},
            protocol=_ML1_PROTOCOL,
            baselines=True,
            headlines=_metaworld_headlines(("maml", "multitask-pg", "random-init"), "ML1 reach"),
        ),
        Suite(
            name="ml1-push",
            title="Meta-World ML1 push-v3 (MAML-TRPO vs multi-task PG vs random init)",
            preset="ml1-reach-maml",
            spec={"task_family": {"name": "metaworld-ml1", "env_name": "push-v3"}},
            protocol=_ML1_PROTOCOL,
            baselines=True,
            headlines=_metaworld_headlines(("maml", "multitask-pg", "random-init"), "ML1 push"),
        ),
        Suite(
            name="ml10",
            title="Meta-World ML10 (MAML-TRPO)",
            preset="ml1-reach-maml",
            # 20M env steps: 100 iterations x 2 phases x 20 tasks x 10 episodes x 500 steps
            spec={"task_family": {"name": "metaworld-ml10", "env_name": None}, "iterations": 100},
            protocol=Protocol(episodes=10, steps=1, tasks=100, later_lr=None, splits=("test", "train"),
                              metric="success"),
            published=(
                Published("maml", "test", "success", 1, 0.132, "v3 envs, MAML-TRPO", METAWORLD_V3),
                Published("maml", "train", "success", 1, 0.210, "v3 envs, MAML-TRPO", METAWORLD_V3),
                Published("maml", "test", "success", 1, 0.316, "v1 envs, garage", METAWORLD_V1),
                Published("maml", "test", "success", 1, 0.399, "ML45, v1 envs, garage", METAWORLD_V1, comparable=False),
            ),
            targets=(Target("maml", "test", "success", 1, ">", 0.132),),
            headlines=_metaworld_headlines(("maml",), "ML10"),
        ),
        # RL² against MAML, the same env-step budget each; ML1: the 2M steps of the MAML ML1 suites'
        # results (10 MAML iterations of 200k, 20 RL² iterations of 100k)
        _rl2_suite("rl2-ml1-reach", "Meta-World ML1 reach-v3 (RL² vs MAML-TRPO, same env steps)", "ML1 reach",
                   rl2_preset="rl2-ml1-reach", budget=2_000_000, protocol=_ML1_PROTOCOL,
                   rl2_protocol=_ML1_RL2_PROTOCOL, maml=Variant("maml", "MAML", "ml1-reach-maml",
                                {"task_family": {"name": "metaworld-ml1", "env_name": "reach-v3"}}),
                   targets=(Target("rl2", "test", "success", AFTER_TRIAL, ">=", 0.90),)),
        _rl2_suite("rl2-ml1-push", "Meta-World ML1 push-v3 (RL² vs MAML-TRPO, same env steps)", "ML1 push",
                   rl2_preset="rl2-ml1-push", budget=2_000_000, protocol=_ML1_PROTOCOL,
                   rl2_protocol=_ML1_RL2_PROTOCOL, maml=Variant("maml", "MAML", "ml1-reach-maml",
                                {"task_family": {"name": "metaworld-ml1", "env_name": "push-v3"}})),
        # 20M steps, the ml10 suite's: 100 MAML iterations of 200k, 200 RL² iterations of 100k
        _rl2_suite(
            "rl2-ml10", "Meta-World ML10 (RL² vs MAML-TRPO, same env steps)", "ML10",
            rl2_preset="rl2-ml10", budget=20_000_000, protocol=_ML10_PROTOCOL, rl2_protocol=_ML10_RL2_PROTOCOL,
            maml=Variant("maml", "MAML", "ml1-reach-maml",
                         {"task_family": {"name": "metaworld-ml10", "env_name": None}}),
            published=(
                # garage's MetaEvaluator samples the adapted policy's actions: beside our sampled rows
                Published(sampled_variant("rl2"), "test", "success", AFTER_TRIAL, 0.358, "v1 envs, garage",
                          METAWORLD_V1_RL2),
                Published("maml", "test", "success", 1, 0.132, "v3 envs, MAML-TRPO", METAWORLD_V3),
                Published("maml", "train", "success", 1, 0.210, "v3 envs, MAML-TRPO", METAWORLD_V3),
                Published(sampled_variant("maml"), "test", "success", 1, 0.316, "v1 envs, garage", METAWORLD_V1),
            ),
            # above our MAML's 22.0% on the same 20M steps (the ml10 suite); the paper's 35.8% the goal
            targets=(Target("rl2", "test", "success", AFTER_TRIAL, ">", 0.22),
                     Target("rl2", "test", "success", AFTER_TRIAL, ">=", 0.358, source="goal")),
        ),
        # a modest 16M steps: 50 MAML iterations of 320k, 200 RL² iterations of 80k; RL² meta-tested
        # on trials of its training length (1 adaptation episode, then the evaluation episode: the
        # trial's 2nd), MAML with Finn et al.'s 0-3 steps
        _rl2_suite("rl2-halfcheetah-vel", "HalfCheetah velocity (RL² vs MAML-TRPO, same env steps)",
                   "HalfCheetah-vel", rl2_preset="rl2-halfcheetah-vel", budget=16_000_000,
                   protocol=_CHEETAH_PROTOCOL, maml=Variant("maml", "MAML", "halfcheetah-vel-maml"),
                   rl2_protocol=Protocol(episodes=1, steps=1, tasks=20, later_lr=None, splits=("test",),
                                         metric="return"),
                   sampled_eval=False),  # its evaluation episodes are sampled already
    )
}


def _preset(name: str) -> dict[str, Any]:
    from service.presets import load_preset

    return copy.deepcopy(load_preset(name).spec)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s leaves set (a None leaf removes the key)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        elif v is None:
            out.pop(k, None)
        else:
            out[k] = copy.deepcopy(v)
    return out
