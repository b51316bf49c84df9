"""The trained meta-policy: :class:`MetaPolicy` (load, act, adapt, save), RL²'s stateful
:class:`RecurrentMetaPolicy` and the supervised few-shot :class:`SupervisedMetaModel` (adapt on a
support set, predict: what ``MetaPolicy.load`` returns for an RL² or a supervised model), their
logging and registration in MLflow (:func:`log_meta_policy`, the pyfunc :class:`MetaPolicyModel`,
:class:`RecurrentMetaPolicyModel` and :class:`SupervisedMetaPolicyModel`), the registry URIs
(:func:`resolve_model_uri`) and a registered learned optimizer as a ``torch.optim.Optimizer``
(:class:`LearnedOptimizer`)."""

from workers.model.optimizer import LearnedOptimizer
from workers.model.policy import (
    CARD_FILE,
    FORMAT_VERSION,
    PARAMS_FILE,
    BaseMetaPolicy,
    MetaPolicy,
    ModelFormatError,
    TaskAdaptation,
)
from workers.model.recurrent import RecurrentMetaPolicy, TrialMetaTest, TrialMetaTestSource
from workers.model.registry import (
    ARTIFACT_NAME,
    MetaPolicyModel,
    RecurrentMetaPolicyModel,
    RegisteredModel,
    SupervisedMetaPolicyModel,
    log_meta_policy,
)
from workers.model.supervised import SupervisedMetaModel
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
    "LearnedOptimizer",
    "PARAMS_FILE",
    "BaseMetaPolicy",
    "MetaPolicy",
    "MetaPolicyModel",
    "ModelFormatError",
    "ModelNotFoundError",
    "RecurrentMetaPolicy",
    "RecurrentMetaPolicyModel",
    "RegisteredModel",
    "SupervisedMetaModel",
    "SupervisedMetaPolicyModel",
    "TaskAdaptation",
    "TrialMetaTest",
    "TrialMetaTestSource",
    "log_meta_policy",
    "parse_registry_uri",
    "resolve_model_uri",
    "resolve_model_version",
]
