"""The task catalog (what the light job contract validates against) says what the families
themselves take: the same parameter names and defaults as their constructors, the same
Meta-World env names as the installed Meta-World, and the same kinds."""

from __future__ import annotations

import inspect

import pytest

from workers.catalog import METAWORLD_V3_ENVS, family_info, family_names
from workers.envs import TaskFamily, family_parameters
from workers.tasks import SupervisedTaskDistribution, TaskDistribution


def _constructor_parameters(cls: type) -> dict[str, object]:
    """Keyword parameters of ``cls`` and of the bases its ``**kwargs`` passes them on to."""
    out: dict[str, object] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        for p in params.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "seed":
                out.setdefault(p.name, p.default)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return out


@pytest.mark.parametrize("name", family_names())
def test_catalog_declares_the_constructors_parameters_and_defaults(name):
    info = family_info(name)
    cls = info.builder_class()
    assert issubclass(cls, TaskDistribution) and cls.kind == info.kind
    assert family_parameters(name) == _constructor_parameters(cls)
    assert ("seed" in inspect.signature(cls.__init__).parameters) == info.seeded


def test_metaworld_env_names_are_the_installed_ones():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    assert sorted(METAWORLD_V3_ENVS) == sorted(ALL_V3_ENVIRONMENTS)


def test_the_two_kinds_share_one_base():
    assert issubclass(TaskFamily, TaskDistribution) and TaskFamily.kind == "rl"
    assert issubclass(SupervisedTaskDistribution, TaskDistribution) and SupervisedTaskDistribution.kind == "supervised"
