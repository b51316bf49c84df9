"""The trained meta-policy: :class:`MetaPolicy` (load, act, adapt, save), its logging and
registration in MLflow (:func:`log_meta_policy`, the pyfunc :class:`MetaPolicyModel`) and the
registry URIs (:func:`resolve_model_uri`)."""

from workers.model.policy import (
    CARD_FILE,
    FORMAT_VERSION,
    PARAMS_FILE,
    MetaPolicy,
    ModelFormatError,
    TaskAdaptation,
)
from workers.model.registry import ARTIFACT_NAME, MetaPolicyModel, RegisteredModel, log_meta_policy
from workers.model.uris import (
    ModelNotFoundError,
    parse_registry_uri,
    resolve_model_uri,
    resolve_model_version,
)

__all__ = [
    "ARTIFACT_NAME",
    "CARD_FILE",
    "FORMAT_VERSION",
    "PARAMS_FILE",
    "MetaPolicy",
    "MetaPolicyModel",
    "ModelFormatError",
    "ModelNotFoundError",
    "RegisteredModel",
    "TaskAdaptation",
    "log_meta_policy",
    "parse_registry_uri",
    "resolve_model_uri",
    "resolve_model_version",
]
