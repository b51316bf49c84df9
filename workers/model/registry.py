"""The registered meta-policy in MLflow: log it (as a ``pyfunc`` model) and register it.

A trained meta-policy is logged as an MLflow ``pyfunc`` model (not ``mlflow.pytorch``'s ``pt2``
format, which fixes the batch size) whose artifacts are

* ``params.pt``: the meta-parameters θ, a plain ``{name: tensor}`` dict saved on the CPU;
* ``policy.json``: everything needed to rebuild and adapt the policy (see
  :data:`workers.model.policy.FORMAT_VERSION`; its ``policy_kind`` says which kind it is).

An MLP meta-policy (MAML, Reptile, multi-task PG) is a :class:`MetaPolicyModel`:
``mlflow.pyfunc.load_model(uri).predict(obs)`` maps a float32 batch of observations
``[N, obs_dim]`` to deterministic actions (the Gaussian mean clipped to the action space, or the
argmax action); it does not adapt -- use :class:`~workers.model.MetaPolicy` for that.

An RL² meta-policy is a :class:`RecurrentMetaPolicyModel`: a recurrent policy adapts within a
trial, so ``predict`` takes the history of one trial and returns its actions and where the trial
stands::

    out = model.predict({
        "obs":         obs,          # [T, obs_dim]: the observation of each step
        "prev_action": prev_action,  # [T, act_dim]: the action the env applied on the step before
                                     #   (clipped to the action space; one-hot for a discrete
                                     #   policy); zeros at the trial's first step
        "prev_reward": prev_reward,  # [T]: the reward of the step before (0 at the first step)
        "prev_done":   prev_done,    # [T]: 1.0 where the step before ended an episode, else 0.0
        "state":       state,        # optional [hidden]: the GRU state before the first step
    })                               #   (omitted: zeros, a new trial)
    out["actions"]                   # [T, act_dim] float32, clipped ([T] int64 for a discrete policy)
    out["state"]                     # [hidden] float32: the state after the last step

Each step's actions are the policy's deterministic ones (the Gaussian mean, the argmax), as
``RecurrentMetaPolicy.act`` gives them step by step; a trial goes on in a later call by passing
the returned ``state`` with the next steps (whose first ``prev_*`` row is the last step's action,
reward and done flag).  Any float dtype is taken; the model's signature lists the fields (a
``DataFrame`` of one row with those columns works too, as MLflow's serving sends it).

A supervised few-shot model (``sl-maml``, ``anil``, ``meta-sgd``, ``sl-reptile``, ``protonet``,
``matching``) is a :class:`SupervisedMetaPolicyModel`: one call adapts it to a task's support set
and predicts the task's queries, as ``SupervisedMetaModel.adapt(support_x, support_y, steps=steps)
.predict(query_x)`` does::

    out = model.predict({
        "support_x": support_x,  # [N, *input_shape]: the support set's inputs
        "support_y": support_y,  # [N] int class indices 0..ways-1 (classification), or
                                 #   [N, out_dim] regression targets
        "query_x":   query_x,    # [M, *input_shape]: the inputs to predict (a task's queries
                                 #   together: conv4 networks normalise the batch by its statistics)
        "steps":     5,          # optional: inner steps where the algorithm takes them (omitted:
    })                           #   the algorithm's meta-test setting)
    out["predictions"]           # [M] int64 classes, or [M, out_dim] float32 values
    out["probabilities"]         # classification only: [M, ways] float32 class probabilities

Any float dtype is taken for the inputs and regression targets (class indices must be integers);
the signature lists the fields (a one-row ``DataFrame`` with those columns works too).

Plain MLflow finds the registry only through ``MLFLOW_TRACKING_URI`` (else it looks in
``./mlflow.db``): set it to the service's store.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from algorithms.base import LearnerState
from workers.contract import JobSpec
from workers.model.policy import BaseMetaPolicy, MetaPolicy
from workers.model.recurrent import RecurrentMetaPolicy
from workers.model.supervised import SupervisedMetaModel
from workers.tasks import TaskDistribution

# MLflow starts its telemetry client when it is imported: switch it off first (it reaches out by default).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
from mlflow.models import ModelSignature, infer_signature  # noqa: E402
from mlflow.pyfunc import PythonModel  # noqa: E402
from mlflow.types import DataType  # noqa: E402
from mlflow.types.schema import Array, ColSpec, Schema, TensorSpec  # noqa: E402

#: Version tags summarising the model -> the metrics they come from, the first one logged: the
#: gradient-based learners' before/after adaptation, or RL²'s first and last episode of a trial;
#: a supervised learner's query accuracy (classification) or MSE (regression) after and before
#: adaptation.
_SUMMARY_TAGS = {
    "return_pre": ("meta/return_pre", "meta/return_first_episode"),
    "return_post": ("meta/return_post", "meta/return_last_episode"),
    "success_post": ("meta/success_post", "meta/success_last_episode"),
    "accuracy": ("meta/accuracy",),
    "accuracy_pre": ("meta/accuracy_pre",),
    "mse": ("meta/mse",),
    "mse_pre": ("meta/mse_pre",),
}

#: The artifact name the model is logged under in its run.
ARTIFACT_NAME = "meta_policy"
_PARAMS_ARTIFACT = "params"
_CARD_ARTIFACT = "policy"


@dataclass(frozen=True)
class RegisteredModel:
    """Where :func:`log_meta_policy` put the model.

    Attributes:
        name: the registered model name, or None when it was only logged.
        version: the registered version, or None when it was only logged.
        uri: ``models:/NAME/VERSION`` when registered, else the logged model's ``models:/m-...``.
        run_id: the MLflow run the model was logged in.
        model_id: MLflow's logged-model id (``m-...``).
    """

    name: str | None
    version: int | None
    uri: str
    run_id: str
    model_id: str


def log_meta_policy(
    *, state: LearnerState, spec: JobSpec, final_metrics: dict[str, float], register_as: str | None,
    extra_tags: dict[str, str] | None = None, family: TaskDistribution | None = None,
) -> RegisteredModel:
    """Log the meta-policy of ``state`` to the active MLflow run as a pyfunc model, and register
    it as ``register_as`` (unless None) with version tags describing it.

    Args:
        state: the learner's final state (its ``params`` are θ).
        spec: the job spec that trained it (stored with the model; adaptation rebuilds the task
            family from it).
        final_metrics: the last iteration's metrics; ``meta/return_pre``, ``meta/return_post``
            and ``meta/success_post`` become version tags where present (for RL², the first and
            last episode of a trial: ``meta/return_first_episode``, ``meta/return_last_episode``,
            ``meta/success_last_episode``; for a supervised learner ``meta/accuracy`` and
            ``meta/accuracy_pre``, or ``meta/mse`` and ``meta/mse_pre``, as the tags
            ``accuracy``, ``accuracy_pre``, ``mse``, ``mse_pre``).
        register_as: registered model name, or None to log without registering.
        extra_tags: more version tags (the driver adds ``owner`` and ``job_id``).
        family: the job's task family (or supervised distribution), where the caller has it
            built (an RL family's action bounds are stored with the model; without it the family
            is built from ``spec`` where needed).

    Raises:
        RuntimeError: no MLflow run is active.
        ValueError: ``state`` does not belong to ``spec`` or its parameters do not fit its
            policy spec.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError(
            "log_meta_policy needs an active MLflow run: call it inside `with mlflow.start_run(...)`"
        )
    if state.algorithm != spec.algorithm.name:
        raise ValueError(
            f"the learner state is for algorithm {state.algorithm!r} but the job spec says "
            f"{spec.algorithm.name!r}; pass the spec the state was trained with"
        )
    policy = BaseMetaPolicy.from_learner_state(spec, state, source=f"runs:/{run.info.run_id}/{ARTIFACT_NAME}")
    if family is not None:
        policy._family = family
    python_model: PythonModel
    if isinstance(policy, RecurrentMetaPolicy):
        python_model = RecurrentMetaPolicyModel()
        example_in: Any = _history_example(policy)
        signature = _history_signature(policy, example_in)
    elif isinstance(policy, SupervisedMetaModel):
        python_model = SupervisedMetaPolicyModel()
        example_in = _support_example(policy)
        signature = _support_signature(policy, example_in)
    else:
        python_model = MetaPolicyModel()
        example_in = np.zeros((1, policy.policy_spec.obs_dim), np.float32)
        signature = infer_signature(example_in, policy.act(example_in))
    with tempfile.TemporaryDirectory(prefix="metarl-model-") as tmp:
        paths = policy.save(Path(tmp), run_id=run.info.run_id)
        info = mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME,
            python_model=python_model,
            artifacts={_PARAMS_ARTIFACT: str(paths[0]), _CARD_ARTIFACT: str(paths[1])},
            signature=signature,
            input_example=example_in,
            # explicit requirements: inferring them loads the model in a subprocess (~2 s more)
            pip_requirements=_requirements(),
            metadata={"algorithm": state.algorithm, "task_family": spec.task_family.name, "policy_kind": policy.kind},
        )
    model_id = str(info.model_id)
    if register_as is None:
        return RegisteredModel(name=None, version=None, uri=info.model_uri, run_id=run.info.run_id, model_id=model_id)
    tags = {
        "algorithm": state.algorithm,
        "task_family": spec.task_family.name,
        "env_name": spec.task_family.env_name or "",
        "spec": spec.model_dump_json(),
        **(extra_tags or {}),
    }
    for key, metrics in _SUMMARY_TAGS.items():
        value = next((final_metrics[m] for m in metrics if final_metrics.get(m) is not None), None)
        if value is not None:
            tags[key] = repr(float(value))
    version = mlflow.register_model(info.model_uri, register_as, tags=tags)
    number = int(version.version)
    return RegisteredModel(
        name=register_as, version=number, uri=f"models:/{register_as}/{number}", run_id=run.info.run_id,
        model_id=model_id
    )


def _requirements() -> list[str]:
    import cloudpickle
    import gymnasium
    import pydantic

    return [
        f"mlflow=={mlflow.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
        f"gymnasium=={gymnasium.__version__}",
        f"pydantic=={pydantic.__version__}",
    ]


class MetaPolicyModel(PythonModel):
    """The pyfunc face of a meta-policy: observations → deterministic actions (no adaptation).

    ``predict`` takes a float32 ``[N, obs_dim]`` array (or a DataFrame of those columns) and
    returns ``[N, act_dim]`` float32 Gaussian means clipped to the action space (what the env
    applies), or ``[N]`` int64 argmax actions for a discrete policy.
    """

    def __init__(self) -> None:
        self._policy: MetaPolicy | None = None

    def load_context(self, context: Any) -> None:
        """Load the policy (on the CPU) from the model's artifacts."""
        policy = _load(context)
        if not isinstance(policy, MetaPolicy):
            raise TypeError(f"MetaPolicyModel holds an MLP meta-policy; the artifacts hold a {type(policy).__name__}")
        self._policy = policy

    @property
    def policy(self) -> MetaPolicy:
        """The loaded :class:`MetaPolicy`."""
        if self._policy is None:
            raise RuntimeError("MetaPolicyModel is not loaded: use mlflow.pyfunc.load_model(uri)")
        return self._policy

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        """Deterministic actions for a batch of observations ``[N, obs_dim]``."""
        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        return self.policy.act(x, deterministic=True)


class RecurrentMetaPolicyModel(PythonModel):
    """The pyfunc face of an RL² meta-policy: one trial's history → its deterministic actions and
    the GRU state after it (the input format is in the module docstring)."""

    def __init__(self) -> None:
        self._policy: RecurrentMetaPolicy | None = None

    def load_context(self, context: Any) -> None:
        """Load the policy (on the CPU) from the model's artifacts."""
        policy = _load(context)
        if not isinstance(policy, RecurrentMetaPolicy):
            raise TypeError(f"RecurrentMetaPolicyModel holds an RL² meta-policy; the artifacts hold a "
                            f"{type(policy).__name__}")
        self._policy = policy

    @property
    def policy(self) -> RecurrentMetaPolicy:
        """The loaded :class:`~workers.model.RecurrentMetaPolicy`."""
        if self._policy is None:
            raise RuntimeError("RecurrentMetaPolicyModel is not loaded: use mlflow.pyfunc.load_model(uri)")
        return self._policy

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """``{"actions": [T, act_dim] (or [T]), "state": [hidden]}`` for a trial's history
        ``{"obs", "prev_action", "prev_reward", "prev_done"[, "state"]}`` (a dict of arrays, or a
        one-row DataFrame with those columns)."""
        fields = _input_fields(model_input, what="an RL² model's predict takes a dict of its trial's history "
                               f"{list(_HISTORY_FIELDS)} (and optionally 'state')", row="one trial's history")
        missing = [k for k in _HISTORY_FIELDS if k not in fields]
        if missing:
            raise ValueError(f"predict needs {list(_HISTORY_FIELDS)} (and optionally 'state'); missing {missing}")
        state = fields.get("state")
        actions, last = self.policy.act_history(
            np.asarray(fields["obs"], np.float32), np.asarray(fields["prev_action"]),
            np.asarray(fields["prev_reward"], np.float32), np.asarray(fields["prev_done"], np.float32),
            None if state is None else np.asarray(state, np.float32),
        )
        return {"actions": actions, "state": last}


class SupervisedMetaPolicyModel(PythonModel):
    """The pyfunc face of a supervised few-shot model: a task's support set and queries → the
    queries' predictions, the model adapted on the support set (the input format is in the module
    docstring)."""

    def __init__(self) -> None:
        self._policy: SupervisedMetaModel | None = None

    def load_context(self, context: Any) -> None:
        """Load the model (on the CPU) from the model's artifacts."""
        policy = _load(context)
        if not isinstance(policy, SupervisedMetaModel):
            raise TypeError(f"SupervisedMetaPolicyModel holds a supervised model; the artifacts hold a "
                            f"{type(policy).__name__}")
        self._policy = policy

    @property
    def policy(self) -> SupervisedMetaModel:
        """The loaded :class:`~workers.model.SupervisedMetaModel`."""
        if self._policy is None:
            raise RuntimeError("SupervisedMetaPolicyModel is not loaded: use mlflow.pyfunc.load_model(uri)")
        return self._policy

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """``{"predictions": [M] int64 or [M, out_dim] float32[, "probabilities": [M, ways]]}`` for
        ``{"support_x", "support_y", "query_x"[, "steps"]}`` (a dict of arrays, or a one-row
        DataFrame with those columns)."""
        fields = _input_fields(model_input, what="a supervised model's predict takes a dict of "
                               f"{list(_SUPPORT_FIELDS)} (and optionally 'steps')", row="one task's support set")
        missing = [k for k in _SUPPORT_FIELDS if k not in fields]
        if missing:
            raise ValueError(f"predict needs {list(_SUPPORT_FIELDS)} (and optionally 'steps'); missing {missing}")
        steps = fields.get("steps")
        if steps is not None:
            value = np.asarray(steps)
            if value.shape != () or value.dtype.kind not in "iu":
                raise ValueError(f"steps must be a positive integer, got {steps!r}")
            steps = int(value)
        adapted = self.policy.adapt(_nested(fields["support_x"]), _nested(fields["support_y"]), steps=steps)
        query = _nested(fields["query_x"])
        out = {"predictions": adapted.predict(query)}
        if adapted.classification:
            out["probabilities"] = adapted.predict_proba(query)
        return out


#: the fields of a trial's history every pyfunc ``predict`` call of an RL² model needs
_HISTORY_FIELDS = ("obs", "prev_action", "prev_reward", "prev_done")
#: the fields every pyfunc ``predict`` call of a supervised model needs
_SUPPORT_FIELDS = ("support_x", "support_y", "query_x")


def _load(context: Any) -> BaseMetaPolicy:
    return BaseMetaPolicy.from_files(
        params_file=Path(context.artifacts[_PARAMS_ARTIFACT]),
        card_file=Path(context.artifacts[_CARD_ARTIFACT]),
        source="pyfunc",
    )


def _input_fields(model_input: Any, *, what: str, row: str) -> dict[str, Any]:
    """The fields of a pyfunc input from a dict, or from the one-row DataFrame MLflow makes of a
    dict when it checks the input against the signature (``what``: the input the model takes,
    ``row``: what the one row is, for the errors)."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if len(model_input) != 1:
            raise ValueError(f"predict takes {row} (one row), got {len(model_input)} rows")
        first = model_input.iloc[0]
        return {k: np.asarray(first[k].tolist() if hasattr(first[k], "tolist") else first[k])
                for k in model_input.columns if not _is_missing(first[k])}
    if isinstance(model_input, dict):
        return {k: v for k, v in model_input.items() if v is not None}
    raise TypeError(f"{what}, got {type(model_input).__name__}")


def _nested(value: Any) -> Any:
    """An array from what MLflow's schema check leaves of one: nested arrays of objects (an
    array column's value) become one numeric array; anything else is returned as it is."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return np.asarray(value.tolist())
    return value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _history_example(policy: RecurrentMetaPolicy) -> dict[str, np.ndarray]:
    """A trial's first step: a zero observation and zero previous-step inputs."""
    ps = policy.policy_spec
    return {
        "obs": np.zeros((1, ps.obs_dim), np.float32),
        "prev_action": np.zeros((1, ps.act_dim), np.float32),
        "prev_reward": np.zeros(1, np.float32),
        "prev_done": np.zeros(1, np.float32),
    }


def _support_example(policy: SupervisedMetaModel) -> dict[str, np.ndarray]:
    """A task's smallest support set: one zero input per class (labels ``0..ways-1``) or one zero
    input with a zero target, and one zero query."""
    n = policy.output_dim if policy.classification else 1
    x = np.zeros((n, *policy.input_shape), np.float32)
    y = np.arange(n, dtype=np.int64) if policy.classification else np.zeros((1, policy.output_dim), np.float32)
    return {"support_x": x, "support_y": y, "query_x": x[:1].copy()}


def _support_signature(policy: SupervisedMetaModel, example: dict[str, np.ndarray]) -> ModelSignature:
    """The supervised pyfunc's signature: the support set and the queries (``steps`` optional),
    the predictions (and a classifier's probabilities)."""
    f = DataType.double  # float32 and float64 inputs both pass

    def nested(depth: int, leaf: DataType) -> Array:
        out = Array(leaf)
        for _ in range(depth - 1):
            out = Array(out)
        return out

    rank = 1 + len(policy.input_shape)
    inputs = Schema([
        ColSpec(nested(rank, f), "support_x"),
        ColSpec(nested(1, DataType.long) if policy.classification else nested(2, f), "support_y"),
        ColSpec(nested(rank, f), "query_x"),
        ColSpec(DataType.long, "steps", required=False),
    ])
    adapted = policy.adapt(example["support_x"], example["support_y"])
    predictions = adapted.predict(example["query_x"])
    outputs: list[ColSpec | TensorSpec] = [TensorSpec(predictions.dtype, (-1, *predictions.shape[1:]), "predictions")]
    if policy.classification:
        outputs.append(TensorSpec(np.dtype(np.float32), (-1, policy.output_dim), "probabilities"))
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def _history_signature(policy: RecurrentMetaPolicy, example: dict[str, np.ndarray]) -> ModelSignature:
    """The RL² pyfunc's signature: the history's arrays (``state`` optional) and the outputs."""
    f = DataType.double  # float32 and float64 inputs both pass
    inputs = Schema([
        ColSpec(Array(Array(f)), "obs"),
        ColSpec(Array(Array(f)), "prev_action"),
        ColSpec(Array(f), "prev_reward"),
        ColSpec(Array(f), "prev_done"),
        ColSpec(Array(f), "state", required=False),
    ])
    actions, state = policy.act_history(example["obs"], example["prev_action"], example["prev_reward"],
                                        example["prev_done"])
    outputs = Schema([
        TensorSpec(actions.dtype, (-1, *actions.shape[1:]), "actions"),
        TensorSpec(state.dtype, (-1,), "state"),
    ])
    return ModelSignature(inputs=inputs, outputs=outputs)
