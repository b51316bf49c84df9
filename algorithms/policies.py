"""MLP policies usable functionally over a params dict.

Both policies are ordinary ``nn.Module``s (so ``torch.func.functional_call(policy, params,
(obs,))`` works) and additionally provide ``forward_stacked``: the same network evaluated for
many tasks at once, each with its own parameters, as one batched matrix product per layer
(``params[k]`` has a leading task dimension, ``obs`` is ``[n_tasks, N, obs_dim]``).  That is the
form the learner's fast path and the sampler's batched inference use.

The distribution parameters a policy outputs are a tuple of tensors:
``(mean, log_std)`` for the Gaussian policy and ``(logits,)`` for the categorical one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]
DistParams = tuple[Tensor, ...]

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


@dataclass(frozen=True)
class PolicySpec:
    """Architecture of a policy; enough to rebuild it anywhere (it is logged and pickled).

    Attributes:
        obs_dim: observation size.
        act_dim: action size (continuous) or number of actions (discrete).
        hidden_sizes: widths of the hidden layers (the MAML paper uses two of 100).
        activation: ``"tanh"`` or ``"relu"``.
        discrete: a categorical policy instead of a Gaussian one.
        init_std: initial standard deviation of the Gaussian policy.
        output_gain: Xavier gain of the output layer (0.01 keeps the initial mean near its
            bias; 1.0 is the plain Xavier initialisation of rllab and the MAML reference code).
    """

    obs_dim: int
    act_dim: int
    hidden_sizes: tuple[int, ...] = (100, 100)
    activation: Literal["tanh", "relu"] = "tanh"
    discrete: bool = False
    init_std: float = 1.0
    output_gain: float = 0.01

    def __post_init__(self) -> None:
        if self.obs_dim < 1 or self.act_dim < 1:
            raise ValueError(f"PolicySpec: obs_dim and act_dim must be >= 1, got {self.obs_dim}, {self.act_dim}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"PolicySpec: unknown activation {self.activation!r}; valid: {sorted(_ACTIVATIONS)}")
        if any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"PolicySpec: hidden sizes must be >= 1, got {self.hidden_sizes}")
        if not self.init_std > 0:
            raise ValueError(f"PolicySpec: init_std must be > 0, got {self.init_std}")
        if not self.output_gain > 0:
            raise ValueError(f"PolicySpec: output_gain must be > 0, got {self.output_gain}")


class _MLPPolicy(nn.Module):
    """Shared MLP body: layers named ``body.{i}`` (``nn.Linear``)."""

    spec: PolicySpec

    def __init__(self, spec: PolicySpec, out_dim: int) -> None:
        super().__init__()
        self.spec = spec
        sizes = (spec.obs_dim, *spec.hidden_sizes, out_dim)
        self.body = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self._act = _ACTIVATIONS[spec.activation]
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Xavier-uniform weights, zero biases (the MAML ports' initialisation); by default a small
        # last layer keeps the initial policy close to its bias so the initial std sets the
        # exploration (spec.output_gain = 1 is the ports' plain Xavier output layer).
        gain = self.spec.output_gain
        for i, layer in enumerate(self.body):
            assert isinstance(layer, nn.Linear)
            nn.init.xavier_uniform_(layer.weight, gain=gain if i == len(self.body) - 1 else 1.0)
            nn.init.zeros_(layer.bias)

    def _mlp(self, obs: Tensor) -> Tensor:
        h = obs
        last = len(self.body) - 1
        for i, layer in enumerate(self.body):
            h = layer(h)
            if i < last:
                h = self._act(h)
        return h

    def _mlp_stacked(self, params: Params, obs: Tensor) -> Tensor:
        h = obs
        last = len(self.body) - 1
        for i in range(last + 1):
            w, b = params[f"body.{i}.weight"], params[f"body.{i}.bias"]
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if i < last:
                h = self._act(h)
        return h

    def params(self) -> Params:
        """The parameters as a plain dict of detached tensors (the functional form)."""
        return {k: v.detach().clone() for k, v in self.named_parameters()}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class GaussianMLPPolicy(_MLPPolicy):
    """Diagonal Gaussian policy: MLP mean, state-independent ``log_std`` parameter."""

    def __init__(self, spec: PolicySpec) -> None:
        if spec.discrete:
            raise ValueError("GaussianMLPPolicy needs a continuous spec (discrete=False)")
        super().__init__(spec, spec.act_dim)
        self.log_std = nn.Parameter(torch.full((spec.act_dim,), math.log(spec.init_std)))

    def forward(self, obs: Tensor) -> DistParams:
        return self._mlp(obs), self.log_std

    def forward_stacked(self, params: Params, obs: Tensor) -> DistParams:
        return self._mlp_stacked(params, obs), params["log_std"].unsqueeze(1)

    @staticmethod
    def log_prob(dist: DistParams, actions: Tensor) -> Tensor:
        mean, log_std = dist
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * mean.shape[-1] * math.log(2 * math.pi)

    @staticmethod
    def kl(old: DistParams, new: DistParams) -> Tensor:
        """KL(old || new) per sample, summed over action dimensions."""
        mu0, ls0 = old
        mu1, ls1 = new
        var0, var1 = torch.exp(2 * ls0), torch.exp(2 * ls1)
        return (ls1 - ls0 + (var0 + (mu0 - mu1).pow(2)) / (2 * var1) - 0.5).sum(-1)

    @staticmethod
    def entropy(dist: DistParams) -> Tensor:
        mean, log_std = dist
        ent = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)
        return ent.expand(mean.shape[:-1])

    @staticmethod
    def sample(dist: DistParams, generator: torch.Generator | None = None) -> Tensor:
        mean, log_std = dist
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + noise * torch.exp(log_std)

    @staticmethod
    def mode(dist: DistParams) -> Tensor:
        return dist[0]


class CategoricalMLPPolicy(_MLPPolicy):
    """Categorical policy over ``act_dim`` discrete actions; the MLP outputs logits."""

    def __init__(self, spec: PolicySpec) -> None:
        if not spec.discrete:
            raise ValueError("CategoricalMLPPolicy needs a discrete spec (discrete=True)")
        super().__init__(spec, spec.act_dim)

    def forward(self, obs: Tensor) -> DistParams:
        return (self._mlp(obs),)

    def forward_stacked(self, params: Params, obs: Tensor) -> DistParams:
        return (self._mlp_stacked(params, obs),)

    @staticmethod
    def log_prob(dist: DistParams, actions: Tensor) -> Tensor:
        logp = torch.log_softmax(dist[0], dim=-1)
        return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def kl(old: DistParams, new: DistParams) -> Tensor:
        lp0 = torch.log_softmax(old[0], dim=-1)
        lp1 = torch.log_softmax(new[0], dim=-1)
        return (lp0.exp() * (lp0 - lp1)).sum(-1)

    @staticmethod
    def entropy(dist: DistParams) -> Tensor:
        lp = torch.log_softmax(dist[0], dim=-1)
        return -(lp.exp() * lp).sum(-1)

    @staticmethod
    def sample(dist: DistParams, generator: torch.Generator | None = None) -> Tensor:
        probs = torch.softmax(dist[0], dim=-1)
        flat = probs.reshape(-1, probs.shape[-1])
        return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])

    @staticmethod
    def mode(dist: DistParams) -> Tensor:
        return dist[0].argmax(-1)


Policy = GaussianMLPPolicy | CategoricalMLPPolicy


def make_policy(spec: PolicySpec, *, seed: int | None = None) -> Policy:
    """Build the policy ``spec`` describes; ``seed`` fixes its initial parameters."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make_policy(spec)
    return CategoricalMLPPolicy(spec) if spec.discrete else GaussianMLPPolicy(spec)


def stack_params(params: list[Params]) -> Params:
    """Per-task parameter dicts → one dict with a leading task dimension."""
    if not params:
        raise ValueError("stack_params needs at least one params dict")
    return {k: torch.stack([p[k] for p in params]) for k in params[0]}


def unstack_params(stacked: Params) -> list[Params]:
    """Inverse of :func:`stack_params`."""
    n = next(iter(stacked.values())).shape[0]
    return [{k: v[i] for k, v in stacked.items()} for i in range(n)]


def expand_params(params: Params, n: int) -> Params:
    """``params`` repeated for ``n`` tasks as a view (gradients flow back summed)."""
    return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}


def params_to_vector(params: Params) -> Tensor:
    return torch.cat([v.reshape(-1) for v in params.values()])


def vector_to_params(vector: Tensor, like: Params) -> Params:
    out: Params = {}
    i = 0
    for k, v in like.items():
        out[k] = vector[i : i + v.numel()].view_as(v)
        i += v.numel()
    if i != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, params need {i}")
    return out
