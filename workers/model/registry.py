"""The registered meta-policy in MLflow: log it (as a ``pyfunc`` model) and register it.

A trained meta-policy is logged as an MLflow ``pyfunc`` model (a :class:`MetaPolicyModel`, not
``mlflow.pytorch``'s ``pt2`` format, which fixes the batch size) whose artifacts are

* ``params.pt``: the meta-parameters θ, a plain ``{name: tensor}`` dict saved on the CPU;
* ``policy.json``: everything needed to rebuild and adapt the policy (see
  :data:`workers.model.policy.FORMAT_VERSION`).

The pyfunc model (``mlflow.pyfunc.load_model(uri).predict(obs)``) maps a float32 batch of
observations ``[N, obs_dim]`` to deterministic actions (the Gaussian mean clipped to the action
space, or the argmax action); it does not adapt -- use :class:`~workers.model.MetaPolicy` for
that.  Plain MLflow finds the registry only through ``MLFLOW_TRACKING_URI`` (else it looks in
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
from workers.envs import TaskFamily
from workers.model.policy import MetaPolicy

# MLflow starts its telemetry client when it is imported: switch it off first (it reaches out by default).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlflow.pyfunc import PythonModel  # noqa: E402

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
    extra_tags: dict[str, str] | None = None, family: TaskFamily | None = None,
) -> RegisteredModel:
    """Log the meta-policy of ``state`` to the active MLflow run as a pyfunc model, and register
    it as ``register_as`` (unless None) with version tags describing it.

    Args:
        state: the learner's final state (its ``params`` are θ).
        spec: the job spec that trained it (stored with the model; adaptation rebuilds the task
            family from it).
        final_metrics: the last iteration's metrics; ``meta/return_pre``, ``meta/return_post``
            and ``meta/success_post`` become version tags where present.
        register_as: registered model name, or None to log without registering.
        extra_tags: more version tags (the driver adds ``owner`` and ``job_id``).
        family: the job's task family, where the caller has it built (its action bounds are
            stored with the model; without it the family is built from ``spec``).

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
    policy = MetaPolicy.from_learner_state(spec, state, source=f"runs:/{run.info.run_id}/{ARTIFACT_NAME}")
    if family is not None:
        policy._family = family
    ps = state.policy_spec
    example_in = np.zeros((1, ps.obs_dim), np.float32)
    signature = infer_signature(example_in, policy.act(example_in))
    with tempfile.TemporaryDirectory(prefix="metarl-model-") as tmp:
        paths = policy.save(Path(tmp), run_id=run.info.run_id)
        info = mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME,
            python_model=MetaPolicyModel(),
            artifacts={_PARAMS_ARTIFACT: str(paths[0]), _CARD_ARTIFACT: str(paths[1])},
            signature=signature,
            input_example=example_in,
            # explicit requirements: inferring them loads the model in a subprocess (~2 s more)
            pip_requirements=_requirements(),
            metadata={"algorithm": state.algorithm, "task_family": spec.task_family.name},
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
    for key in ("return_pre", "return_post", "success_post"):
        value = final_metrics.get(f"meta/{key}")
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
        self._policy = MetaPolicy.from_files(
            params_file=Path(context.artifacts[_PARAMS_ARTIFACT]),
            card_file=Path(context.artifacts[_CARD_ARTIFACT]),
            source="pyfunc",
        )

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
