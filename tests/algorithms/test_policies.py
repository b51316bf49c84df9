import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributions import Categorical, Independent, Normal, kl_divergence
from torch.func import functional_call

from algorithms.policies import PolicySpec, make_policy, stack_params

ROOT = Path(__file__).resolve().parents[2]


def test_gaussian_policy_matches_torch_distributions_and_functional_call():
    spec = PolicySpec(obs_dim=4, act_dim=3, hidden_sizes=(8, 8))
    pol = make_policy(spec, seed=0)
    obs = torch.randn(5, 4)
    params = pol.params()
    mean, log_std = functional_call(pol, params, (obs,))
    assert torch.allclose(mean, pol(obs)[0])
    ref = Independent(Normal(mean, log_std.exp()), 1)
    a = ref.sample()
    assert torch.allclose(pol.log_prob((mean, log_std), a), ref.log_prob(a), atol=1e-5)
    other = (mean + 0.3, log_std - 0.2)
    ref2 = Independent(Normal(other[0], other[1].exp()), 1)
    assert torch.allclose(pol.kl((mean, log_std), other), kl_divergence(ref, ref2), atol=1e-5)
    assert torch.allclose(pol.entropy((mean, log_std)), ref.entropy(), atol=1e-5)


def test_categorical_policy_matches_torch_distributions():
    spec = PolicySpec(obs_dim=4, act_dim=3, hidden_sizes=(8,), discrete=True)
    pol = make_policy(spec, seed=0)
    obs = torch.randn(6, 4)
    (logits,) = pol(obs)
    logits = logits * 10
    ref = Categorical(logits=logits)
    a = ref.sample()
    assert torch.allclose(pol.log_prob((logits,), a), ref.log_prob(a), atol=1e-5)
    other = (logits.flip(-1),)
    assert torch.allclose(pol.kl((logits,), other), kl_divergence(ref, Categorical(logits=other[0])), atol=1e-5)


def test_stacked_forward_equals_per_task_functional_call():
    for discrete in (False, True):
        spec = PolicySpec(obs_dim=3, act_dim=2, hidden_sizes=(8, 8), discrete=discrete, activation="relu")
        pols = [make_policy(spec, seed=s) for s in range(4)]
        stacked = stack_params([p.params() for p in pols])
        obs = torch.randn(4, 7, 3)
        out = pols[0].forward_stacked(stacked, obs)
        for i, p in enumerate(pols):
            ref = functional_call(p, p.params(), (obs[i],))
            assert torch.allclose(out[0][i], ref[0], atol=1e-6)


def test_same_seed_same_initial_params():
    spec = PolicySpec(obs_dim=3, act_dim=2)
    a, b = make_policy(spec, seed=7).params(), make_policy(spec, seed=7).params()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_output_gain_scales_only_the_output_layer():
    """Xavier-uniform bounds: gain * sqrt(6 / (fan_in + fan_out)); the default 0.01 keeps the
    initial mean near its bias, 1.0 is the MAML reference code's plain Xavier output layer."""
    small = make_policy(PolicySpec(obs_dim=17, act_dim=6), seed=3).params()
    plain = make_policy(PolicySpec(obs_dim=17, act_dim=6, output_gain=1.0), seed=3).params()
    bound = (6 / (100 + 6)) ** 0.5
    assert plain["body.2.weight"].abs().max() <= bound and plain["body.2.weight"].abs().max() > 0.5 * bound
    assert small["body.2.weight"].abs().max() <= 0.01 * bound
    assert torch.equal(small["body.0.weight"], plain["body.0.weight"])  # hidden layers unchanged
    with pytest.raises(ValueError, match="output_gain"):
        PolicySpec(obs_dim=1, act_dim=1, output_gain=0.0)


def test_algorithms_import_nothing_of_ray_mlflow_fastapi_workers_service():
    """Both statically (no import statement) and at run time (nothing pulled in transitively)."""
    forbidden = ("ray", "mlflow", "fastapi", "uvicorn", "workers", "service", "gymnasium", "metaworld")
    for path in (ROOT / "algorithms").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from"):
                top = words[1].split(".")[0]
                assert top not in forbidden, f"{path.name} imports {top}"
    code = (
        "import sys, importlib, pkgutil, algorithms\n"
        "for m in pkgutil.walk_packages(algorithms.__path__, 'algorithms.'): importlib.import_module(m.name)\n"
        f"bad = [m for m in {forbidden!r} if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
