"""The recurrent policy of RL² (Duan et al. 2016, sec. 3; Wang et al. 2016, sec. 2).

At every step of a trial the policy sees the current observation together with what happened on
the previous step -- the action taken, the reward received and whether that step ended an
episode -- and updates a GRU hidden state (Cho et al. 2014) that is *not* reset between the
episodes of a trial, only at the start of a new one.  What the agent learned about the task so far
lives in that state: adaptation is a forward pass.

    x_t = [o_t, a_{t-1}, r_{t-1}, d_{t-1}]      (one-hot a for discrete actions; zeros at t = 0)
    e_t = MLP(x_t);  h_{t+1} = GRUCell(e_t, h_t)
    π(· | h_{t+1}) = N(W_μ h_{t+1} + b_μ, exp(log_std)²)  or  Categorical(softmax(W h_{t+1} + b))
    V_t = w_V · h_{t+1} + b_V

Like :mod:`algorithms.policies`, the parameters are plain data: every method takes a ``params``
dict and runs the module through :func:`torch.func.functional_call`, so the learner can
differentiate through them and a sampler can act with parameters it was handed.  ``step`` is
``unroll`` over one time step; ``unroll`` runs the GRU over the whole sequence in one fused call
(``torch.gru``, the kernel of ``nn.GRU``), which agrees with ``nn.GRUCell`` stepped ``T`` times to
float rounding (checked in the tests) and takes half its time on CPU.

The distribution parameters are those of :mod:`algorithms.policies`: ``(mean, log_std)`` for the
Gaussian head and ``(logits,)`` for the categorical one; ``log_prob``, ``entropy``, ``kl``,
``sample`` and ``mode`` are those policies' own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from algorithms.policies import CategoricalMLPPolicy, DistParams, GaussianMLPPolicy, Params

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


@dataclass(frozen=True)
class RecurrentPolicySpec:
    """Architecture of a recurrent policy; enough to rebuild it anywhere (logged and pickled).

    Attributes:
        obs_dim: observation size.
        act_dim: action size (continuous) or number of actions (discrete).
        discrete: a categorical policy instead of a Gaussian one.
        encoder_sizes: widths of the MLP between the step's input and the GRU (may be empty).
        hidden_size: size of the GRU state.
        activation: of the encoder layers, ``"tanh"`` or ``"relu"``.
        init_std: initial standard deviation of the Gaussian policy.
    """

    obs_dim: int
    act_dim: int
    discrete: bool
    encoder_sizes: tuple[int, ...] = (64,)
    hidden_size: int = 128
    activation: Literal["tanh", "relu"] = "tanh"
    init_std: float = 1.0

    def __post_init__(self) -> None:
        if self.obs_dim < 1 or self.act_dim < 1:
            raise ValueError(
                f"RecurrentPolicySpec: obs_dim and act_dim must be >= 1, got {self.obs_dim}, {self.act_dim}"
            )
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"RecurrentPolicySpec: unknown activation {self.activation!r}; valid: {sorted(_ACTIVATIONS)}"
            )
        if any(h < 1 for h in self.encoder_sizes):
            raise ValueError(f"RecurrentPolicySpec: encoder sizes must be >= 1, got {self.encoder_sizes}")
        if self.hidden_size < 1:
            raise ValueError(f"RecurrentPolicySpec: hidden_size must be >= 1, got {self.hidden_size}")
        if not self.init_std > 0:
            raise ValueError(f"RecurrentPolicySpec: init_std must be > 0, got {self.init_std}")

    @property
    def input_dim(self) -> int:
        """Size of one step's input ``[obs, previous action, previous reward, previous done]``."""
        return self.obs_dim + self.act_dim + 2


class RecurrentPolicy(nn.Module):
    """GRU policy with a Gaussian (state-independent ``log_std``) or categorical head and a value
    head on the GRU state (see the module docstring).

    Parameters are named ``encoder.{i}.weight/bias``, ``gru.weight_ih/weight_hh/bias_ih/bias_hh``
    (``nn.GRUCell``'s; gate rows in the order reset, update, new), ``head.weight/bias``,
    ``value.weight/bias`` and, for the Gaussian policy, ``log_std``.
    """

    spec: RecurrentPolicySpec

    def __init__(self, spec: RecurrentPolicySpec) -> None:
        super().__init__()
        self.spec = spec
        sizes = (spec.input_dim, *spec.encoder_sizes)
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.gru = nn.GRUCell(sizes[-1], spec.hidden_size)
        self.head = nn.Linear(spec.hidden_size, spec.act_dim)
        self.value = nn.Linear(spec.hidden_size, 1)
        if not spec.discrete:
            self.log_std = nn.Parameter(torch.full((spec.act_dim,), math.log(spec.init_std)))
        self._act = _ACTIVATIONS[spec.activation]
        self._dist = CategoricalMLPPolicy if spec.discrete else GaussianMLPPolicy
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # encoder: Xavier-uniform weights, zero biases (as the MLP policies); the GRU keeps
        # PyTorch's uniform(±1/sqrt(hidden)) initialisation; a small action head keeps the initial
        # policy near its bias so init_std sets the exploration (the MLP policies' output_gain).
        for layer in self.encoder:
            assert isinstance(layer, nn.Linear)
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.xavier_uniform_(self.head.weight, gain=0.01)
        nn.init.zeros_(self.head.bias)
        nn.init.xavier_uniform_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    # --- the computation -------------------------------------------------------------------
    def forward(
        self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, prev_done: Tensor, state: Tensor
    ) -> tuple[DistParams, Tensor, Tensor]:
        """Unroll over the leading time axis with the module's own parameters (the functional
        methods call it through ``functional_call``); see :meth:`unroll`."""
        x = torch.cat([obs, prev_action, prev_reward.unsqueeze(-1), prev_done.unsqueeze(-1)], dim=-1)
        e = x
        for layer in self.encoder:  # every step at once: the encoder has no recurrence
            e = self._act(layer(e))
        # the GRU cell's equations over the whole sequence in one fused call (torch.gru, the kernel
        # behind nn.GRU; nn.GRUCell's parameters and gate order): half the time of a per-step loop
        # forward and backward on CPU, and cuDNN's kernel on a GPU
        g = self.gru
        out, _ = torch.gru(e, state.unsqueeze(0), [g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh], True, 1, 0.0,
                           self.training, False, False)
        head = self.head(out)
        dist: DistParams = (head,) if self.spec.discrete else (head, self.log_std)
        return dist, self.value(out).squeeze(-1), torch.cat([state.unsqueeze(0), out])

    def unroll(
        self,
        params: Params,
        obs: Tensor,
        prev_action: Tensor,
        prev_reward: Tensor,
        prev_done: Tensor,
        state0: Tensor,
    ) -> tuple[DistParams, Tensor, Tensor]:
        """Run ``T`` steps of a batch of ``B`` trials from their states ``state0``.

        Args:
            params: the parameters to run with.
            obs: ``[T, B, obs_dim]``.
            prev_action: ``[T, B, act_dim]`` (one-hot for discrete actions, see
                :meth:`encode_action`; zeros at a trial's first step).
            prev_reward, prev_done: ``[T, B]`` (``prev_done`` 1.0 where the previous step ended
                an episode).
            state0: ``[B, hidden]``, the state before the first step.

        Returns:
            ``(dist, values, states)``: the distribution parameters over ``[T, B]`` (the
            Gaussian's ``log_std`` is ``[act_dim]``), the values ``[T, B]`` and the states
            ``[T + 1, B, hidden]`` (``states[0] = state0``; ``states[t + 1]`` is the state the
            action and value of step ``t`` come from).
        """
        out = torch.func.functional_call(self, params, (obs, prev_action, prev_reward, prev_done, state0))
        return out  # type: ignore[no-any-return]

    def step(
        self,
        params: Params,
        obs: Tensor,
        prev_action: Tensor,
        prev_reward: Tensor,
        prev_done: Tensor,
        state: Tensor,
    ) -> tuple[DistParams, Tensor, Tensor]:
        """One time step of a batch: ``obs [B, obs_dim]`` etc. and ``state [B, hidden]`` ->
        ``(dist over [B], value [B], new state [B, hidden])``; :meth:`unroll` with ``T = 1``."""
        dist, values, states = self.unroll(
            params, obs.unsqueeze(0), prev_action.unsqueeze(0), prev_reward.unsqueeze(0), prev_done.unsqueeze(0),
            state,
        )
        return tuple(d[0] if d.dim() > 1 else d for d in dist), values[0], states[1]

    # --- helpers ---------------------------------------------------------------------------
    def initial_state(self, batch: int, *, dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> Tensor:
        """The state at the start of a trial: zeros ``[batch, hidden]``."""
        ref = self.gru.weight_hh
        return torch.zeros(batch, self.spec.hidden_size, dtype=dtype or ref.dtype, device=device or ref.device)

    def encode_action(self, actions: Tensor) -> Tensor:
        """Actions as the policy's input: one-hot (float) for discrete actions, as they are else."""
        if self.spec.discrete:
            return nn.functional.one_hot(actions.long(), self.spec.act_dim).to(self.gru.weight_hh.dtype)
        return actions

    def params(self) -> Params:
        """The parameters as a plain dict of detached tensors (the functional form)."""
        return {k: v.detach().clone() for k, v in self.named_parameters()}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- the distribution ------------------------------------------------------------------
    def sample(self, dist: DistParams, generator: torch.Generator | None = None) -> Tensor:
        return self._dist.sample(dist, generator)

    def mode(self, dist: DistParams) -> Tensor:
        return self._dist.mode(dist)

    def log_prob(self, dist: DistParams, actions: Tensor) -> Tensor:
        return self._dist.log_prob(dist, actions)

    def entropy(self, dist: DistParams) -> Tensor:
        return self._dist.entropy(dist)

    def kl(self, old: DistParams, new: DistParams) -> Tensor:
        """KL(old || new) per step."""
        return self._dist.kl(old, new)


def make_recurrent_policy(spec: RecurrentPolicySpec, seed: int | None = None) -> RecurrentPolicy:
    """Build the policy ``spec`` describes; ``seed`` fixes its initial parameters."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return RecurrentPolicy(spec)
    return RecurrentPolicy(spec)


__all__ = ["RecurrentPolicy", "RecurrentPolicySpec", "make_recurrent_policy"]
