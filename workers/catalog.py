"""Task distributions by name, as the job contract sees them: what each is, what it takes.

A registration names a distribution's **kind** (``"rl"``: a task family of MDPs with envs;
``"supervised"``: support/query sets), its **parameters** as a frozen pydantic model (names,
defaults, bounds: the one place they are declared; the family's constructor receives the
validated values) and its **builder**, ``"module:Class"``, imported only where envs run.  This
module imports pydantic and nothing else heavy, so the API validates a job's ``task_family``
without gymnasium, MuJoCo or Meta-World.

A plugin module registers its own distributions with :func:`register_family` (see
:mod:`algorithms.registry` for ``METARL_PLUGINS``).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from algorithms.registry import Spec

#: Meta-World 3's v3 env names (``metaworld.env_dict.ALL_V3_ENVIRONMENTS``; a test checks it).
METAWORLD_V3_ENVS = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3", "button-press-topdown-v3",
    "button-press-topdown-wall-v3", "button-press-v3", "button-press-wall-v3", "coffee-button-v3", "coffee-pull-v3",
    "coffee-push-v3", "dial-turn-v3", "disassemble-v3", "door-close-v3", "door-lock-v3", "door-open-v3",
    "door-unlock-v3", "drawer-close-v3", "drawer-open-v3", "faucet-close-v3", "faucet-open-v3", "hammer-v3",
    "hand-insert-v3", "handle-press-side-v3", "handle-press-v3", "handle-pull-side-v3", "handle-pull-v3",
    "lever-pull-v3", "peg-insert-side-v3", "peg-unplug-side-v3", "pick-out-of-hole-v3", "pick-place-v3",
    "pick-place-wall-v3", "plate-slide-back-side-v3", "plate-slide-back-v3", "plate-slide-side-v3", "plate-slide-v3",
    "push-back-v3", "push-v3", "push-wall-v3", "reach-v3", "reach-wall-v3", "shelf-place-v3", "soccer-v3",
    "stick-pull-v3", "stick-push-v3", "sweep-into-v3", "sweep-v3", "window-close-v3", "window-open-v3",
)


class FamilyParams(Spec):
    """Base of a distribution's parameters; every RL family has a horizon."""

    max_episode_steps: int = Field(200, ge=1, le=10_000, description="horizon: episodes are cut here")


def _interval(params: Any, low: str, high: str, *, min_low: float | None = None) -> None:
    lo, hi = getattr(params, low), getattr(params, high)
    if min_low is not None and lo < min_low:
        raise ValueError(f"{low} must be >= {min_low}, got {lo}")
    if not lo < hi:
        raise ValueError(f"{low} must be < {high}, got {low}={lo}, {high}={hi}")


class Navigation2DParams(FamilyParams):
    max_episode_steps: int = Field(100, ge=1, le=10_000)
    low: float = Field(-0.5, ge=-1e3, le=1e3, description="goal box lower corner")
    high: float = Field(0.5, ge=-1e3, le=1e3, description="goal box upper corner")
    action_bound: float = Field(0.1, gt=0, le=1000, description="bound of the policy's action (0.1: the paper's units)")

    @model_validator(mode="after")
    def _box(self) -> Navigation2DParams:
        _interval(self, "low", "high")
        return self


class MujocoParams(FamilyParams):
    observe_position: bool = Field(False, description="the root's position in the observation")
    frame_skip: int = Field(5, ge=1, le=50, description="simulator steps of 0.01 s per env step")
    clip_actions: bool = Field(True, description="clip actions to [-1, 1] before the simulator")


class HalfCheetahVelParams(MujocoParams):
    velocity_low: float = Field(0.0, ge=-100, le=100)
    velocity_high: float = Field(2.0, ge=-100, le=100)

    @model_validator(mode="after")
    def _range(self) -> HalfCheetahVelParams:
        _interval(self, "velocity_low", "velocity_high")
        return self


class CartPolePhysicsParams(FamilyParams):
    length_low: float = Field(0.25, le=100)
    length_high: float = Field(1.0, le=100)
    masspole_low: float = Field(0.05, le=100)
    masspole_high: float = Field(0.5, le=100)

    @model_validator(mode="after")
    def _ranges(self) -> CartPolePhysicsParams:
        _interval(self, "length_low", "length_high", min_low=1e-3)
        _interval(self, "masspole_low", "masspole_high", min_low=1e-3)
        return self


class MetaWorldParams(FamilyParams):
    max_episode_steps: int = Field(500, ge=1, le=500, description="Meta-World episodes are at most 500 steps")


class MetaWorldML1Params(MetaWorldParams):
    env_name: Literal[METAWORLD_V3_ENVS] = Field(  # type: ignore[valid-type]
        description="the Meta-World v3 env, e.g. reach-v3"
    )


# ---- supervised distributions (workers.supervised) ---------------------------------------------
class SinusoidParams(Spec):
    """MAML's sinusoid regression (Finn et al. 2017, sec. 5.1); the defaults are the paper's ranges."""

    shots: int = Field(10, ge=1, le=1000, description="K: support points per task (the paper: 5, 10, 20)")
    queries: int = Field(10, ge=1, le=10_000, description="query points per task, scored after adaptation")
    amplitude_low: float = Field(0.1, ge=0, le=1e3, description="amplitude range, lower end")
    amplitude_high: float = Field(5.0, ge=0, le=1e3, description="amplitude range, upper end")
    phase_low: float = Field(0.0, ge=-100, le=100, description="phase range, lower end (radians)")
    phase_high: float = Field(math.pi, ge=-100, le=100, description="phase range, upper end (radians)")
    input_low: float = Field(-5.0, ge=-1e3, le=1e3, description="input range, lower end")
    input_high: float = Field(5.0, ge=-1e3, le=1e3, description="input range, upper end")

    @model_validator(mode="after")
    def _ranges(self) -> SinusoidParams:
        _interval(self, "amplitude_low", "amplitude_high")
        _interval(self, "phase_low", "phase_high")
        _interval(self, "input_low", "input_high")
        return self


def _episode_fits(params: Any, examples: int, why: str) -> None:
    if params.shots + params.queries > examples:
        raise ValueError(f"shots + queries must be at most {examples} ({why}), got "
                         f"{params.shots} + {params.queries}")


class DigitsRotationsParams(Spec):
    """N-way K-shot on scikit-learn's 8x8 digits x 4 rotations (24/8/8 classes)."""

    ways: int = Field(5, ge=2, le=8, description="N: classes per task (the val and test splits have 8)")
    shots: int = Field(1, ge=1, le=100, description="K: support examples per class")
    queries: int = Field(15, ge=1, le=173, description="query examples per class")

    @model_validator(mode="after")
    def _fits(self) -> DigitsRotationsParams:
        _episode_fits(self, 174, "digit 8 has 174 images, the fewest")
        return self


def _data_dir() -> Any:
    return Field(None, min_length=1, max_length=4096,
                 description="the data set's directory in its published layout; default $METARL_DATA_DIR/<name>")


class _CharacterParams(Spec):
    """N-way K-shot on characters with 20 drawings each (Omniglot's shape: 1100/100/423 characters)."""

    ways: int = Field(5, ge=2, le=100, description="N: classes per task (the papers: 5, 20)")
    shots: int = Field(1, ge=1, le=19, description="K: support drawings per class (the papers: 1, 5)")
    queries: int = Field(15, ge=1, le=19, description="query drawings per class")

    @model_validator(mode="after")
    def _fits(self) -> _CharacterParams:
        _episode_fits(self, 20, "each character has 20 drawings")
        return self


class OmniglotParams(_CharacterParams):
    """N-way K-shot Omniglot (Vinyals et al. 2016; Finn et al. 2017): 1100/100/423 characters x 4 rotations."""

    data_dir: str | None = _data_dir()


class GlyphsParams(_CharacterParams):
    """N-way K-shot on procedurally drawn characters (embedded): 1100/100/423 characters, 20 drawings each."""

    size: int = Field(16, ge=8, le=64, description="image side in pixels")


class MiniImageNetParams(Spec):
    """N-way K-shot mini-ImageNet with Ravi & Larochelle 2017's 64/16/20-class split."""

    ways: int = Field(5, ge=2, le=16, description="N: classes per task (the val split has 16)")
    shots: int = Field(1, ge=1, le=100, description="K: support examples per class (the papers: 1, 5)")
    queries: int = Field(15, ge=1, le=599, description="query examples per class")
    data_dir: str | None = _data_dir()

    @model_validator(mode="after")
    def _fits(self) -> MiniImageNetParams:
        _episode_fits(self, 600, "each class has 600 images")
        return self


@dataclass(frozen=True)
class FamilyInfo:
    """One registered task distribution (see the module docstring).

    Attributes:
        name: the registered name.
        params: its parameter model; ``builder`` is called with its fields as keywords.
        builder: ``"module:Class"`` of the distribution (heavy; imported where it runs).
        kind: ``"rl"`` (envs) or ``"supervised"`` (support/query sets).
        seeded: the builder takes ``seed`` (its construction draws from it: Meta-World's goals).
        summary: one line for listings.
    """

    name: str
    params: type[Spec]
    builder: str
    kind: Literal["rl", "supervised"] = "rl"
    seeded: bool = False
    summary: str = ""

    def validate(self, values: dict[str, Any]) -> Spec:
        """``values`` as this family's parameters; ``ValueError`` naming the bad ones."""
        try:
            return self.params.model_validate(values)
        except ValidationError as exc:
            problems = sorted({self._problem(e) for e in exc.errors()})
            raise ValueError(f"task family {self.name!r}: " + "; ".join(problems)) from None

    def _problem(self, error: Any) -> str:
        """One validation error as a user reads it."""
        field = ".".join(str(p) for p in error["loc"]) or "parameters"
        ctx, kind = error.get("ctx") or {}, error["type"]
        valid = sorted(self.params.model_fields)
        if kind == "missing":
            return f"needs {field}"
        if kind == "extra_forbidden":
            return f"unknown parameter {field!r}; valid: {valid}"
        if kind == "literal_error":
            return f"unknown {field} {error['input']!r}; valid: {ctx.get('expected')}"
        bounds = {"less_than_equal": "at most {le}", "less_than": "below {lt}", "greater_than_equal": "at least {ge}",
                  "greater_than": "above {gt}"}
        value = error.get("input")
        if kind in bounds and isinstance(value, float) and not math.isfinite(value):
            return f"{field} must be a finite number, got {value!r}"  # NaN fails every bound: say what it is
        if kind in bounds:
            return f"{field} must be {bounds[kind].format(**ctx)}, got {error['input']!r}"
        if kind == "value_error":
            return str(ctx.get("error", error["msg"]))
        return f"{field}: {error['msg']}"

    def builder_class(self) -> type:
        module, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module), attr)


_FAMILIES: dict[str, FamilyInfo] = {}


def register_family(info: FamilyInfo) -> FamilyInfo:
    """Register (or replace) a task distribution."""
    _FAMILIES[info.name] = info
    return info


def family_info(name: str) -> FamilyInfo:
    """The registration of ``name``; ``LookupError`` listing the registered names."""
    _plugins()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise LookupError(f"unknown task family {name!r}; valid: {family_names()}") from None


def family_names() -> list[str]:
    _plugins()
    return sorted(_FAMILIES)


def _plugins() -> None:
    from algorithms import registry

    registry.ensure_loaded()


for _info in (
    FamilyInfo("navigation2d", Navigation2DParams, "workers.envs.navigation2d:Navigation2DFamily",
               summary="point robot to a goal in the plane (MAML paper's 2D navigation)"),
    FamilyInfo("halfcheetah-vel", HalfCheetahVelParams, "workers.envs.mujoco:HalfCheetahVelFamily",
               summary="HalfCheetah running at a target velocity"),
    FamilyInfo("halfcheetah-dir", MujocoParams, "workers.envs.mujoco:HalfCheetahDirFamily",
               summary="HalfCheetah running forward or backward"),
    FamilyInfo("ant-dir", MujocoParams, "workers.envs.mujoco:AntDirFamily", summary="Ant running forward or backward"),
    FamilyInfo("cartpole-physics", CartPolePhysicsParams, "workers.envs.cartpole:CartPolePhysicsFamily",
               summary="CartPole with varied pole length and mass"),
    FamilyInfo("metaworld-ml1", MetaWorldML1Params, "workers.envs.metaworld:MetaWorldML1Family", seeded=True,
               summary="Meta-World ML1: one env, 50 train / 50 test goals"),
    FamilyInfo("metaworld-ml10", MetaWorldParams, "workers.envs.metaworld:MetaWorldML10Family", seeded=True,
               summary="Meta-World ML10: 10 train envs, 5 held-out test envs"),
    FamilyInfo("metaworld-ml45", MetaWorldParams, "workers.envs.metaworld:MetaWorldML45Family", seeded=True,
               summary="Meta-World ML45: 45 train envs, 5 held-out test envs"),
    FamilyInfo("sinusoid", SinusoidParams, "workers.supervised.sinusoid:SinusoidRegression", kind="supervised",
               summary="few-shot sine-wave regression (MAML paper's sinusoid)"),
    FamilyInfo("digits-rotations", DigitsRotationsParams, "workers.supervised.datasets:DigitsRotations",
               kind="supervised", summary="N-way K-shot 8x8 digits x 4 rotations (embedded, no download)"),
    FamilyInfo("glyphs", GlyphsParams, "workers.supervised.glyphs:Glyphs", kind="supervised",
               summary="N-way K-shot procedurally drawn characters, Omniglot-sized (embedded, no download)"),
    FamilyInfo("omniglot", OmniglotParams, "workers.supervised.datasets:Omniglot", kind="supervised",
               summary="N-way K-shot Omniglot from a local directory (1100/100/423 characters x 4 rotations)"),
    FamilyInfo("mini-imagenet", MiniImageNetParams, "workers.supervised.datasets:MiniImageNet", kind="supervised",
               summary="N-way K-shot mini-ImageNet from a local directory (Ravi & Larochelle's 64/16/20 split)"),
):
    register_family(_info)
