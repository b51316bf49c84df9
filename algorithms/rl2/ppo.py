"""Recurrent PPO over whole trials: RL²'s "slow" learner.

Duan et al. (2016) train the recurrent policy with TRPO over batches of trials; like most later
implementations (e.g. garage's RL2PPO) this one uses PPO's clipped surrogate (Schulman et al.
2017) with back-propagation through time over each *whole* trial, from the state it started in:

* advantages by GAE (Schulman et al. 2016) computed over the trial as one long interaction -- an
  episode end inside a trial does not cut the bootstrap (the next episode's value is the value of
  what the agent knows by then), only the trial's end does (the value after it is 0):
  :func:`gae_over_trial`;
* the loss (:func:`ppo_loss`): minus the clipped surrogate, plus ``value_coef`` times the squared
  error of the values to the returns, minus ``entropy_coef`` times the entropy, each a mean over
  the real steps of the batch;
* :class:`RL2Learner`: ``epochs`` passes over minibatches of whole trials, Adam, gradient-norm
  clipping; an update with a NaN/inf is rejected (parameters and optimizer left as they were).
  With ``bptt_chunk`` the trials are cut into chunks that start from the state the current
  policy reaches there (recomputed each epoch by a forward pass) and are back-propagated through
  separately (:func:`chunk_batch`): the recurrence's sequential length drops from a trial's
  length to the chunk's, and the chunks of all trials run side by side.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from algorithms.base import HoldsPolicy, LearnerState, UpdateMetrics
from algorithms.errors import NonFiniteError
from algorithms.policies import Params
from algorithms.registry import AdvantageSpec
from algorithms.returns import normalize
from algorithms.rl2.policy import RecurrentPolicy, RecurrentPolicySpec, make_recurrent_policy
from algorithms.rl2.spec import RL2Spec
from algorithms.rl2.trials import Trials


# --- data ------------------------------------------------------------------------------------------
@dataclass
class TrialBatch:
    """Trials as tensors, time-major ``[T, B, ...]`` (the fields of :class:`Trials` the loss
    and the advantages need)."""

    obs: Tensor
    actions: Tensor
    prev_actions: Tensor
    prev_rewards: Tensor
    prev_dones: Tensor
    rewards: Tensor
    trial_end: Tensor
    mask: Tensor
    log_probs: Tensor
    values: Tensor
    initial_state: Tensor

    @property
    def num_trials(self) -> int:
        return int(self.mask.shape[1])

    def select(self, columns: Tensor) -> TrialBatch:
        """The trials ``columns``, cut to the longest of them."""
        mask = self.mask[:, columns]
        steps = int(mask.sum(dim=0).max().item()) if mask.numel() else 0
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v[columns] if f.name == "initial_state" else v[:steps, columns]
        return TrialBatch(**out)


def chunk_batch(batch: TrialBatch, states: Tensor, tensors: Sequence[Tensor], chunk: int
                ) -> tuple[TrialBatch, list[Tensor]]:
    """Cut every trial of ``batch`` into chunks of ``chunk`` steps, side by side as columns
    ``[chunk, n_chunks * B]``, each starting from ``states`` at its first step (``states``:
    ``[T + 1, B, hidden]``, e.g. an unroll's); ``tensors`` (``[T, B]``: advantages, returns) are cut
    the same way.  Chunks that are all padding are dropped.  Back-propagation through a chunked
    batch stops at the chunk boundaries (truncated BPTT with the stored states)."""
    t, b = batch.mask.shape
    n = math.ceil(t / chunk)
    pad = n * chunk - t

    def cut(x: Tensor) -> Tensor:  # [T, B, ...] -> [chunk, n * B, ...]
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
        x = x.reshape(n, chunk, *x.shape[1:]).transpose(0, 1)
        return x.reshape(chunk, n * b, *x.shape[3:])

    out = {f.name: cut(getattr(batch, f.name)) for f in fields(batch) if f.name != "initial_state"}
    out["initial_state"] = states[0 : n * chunk : chunk].reshape(n * b, -1)
    cols = torch.nonzero(out["mask"].sum(dim=0) > 0).squeeze(-1)
    chunked = TrialBatch(**out)
    return chunked.select(cols), [cut(x)[:, cols] for x in tensors]


def make_trial_batch(trials: Sequence[Trials], *, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> TrialBatch:
    """The trials of several tasks side by side as one :class:`TrialBatch` (padded to the longest)."""
    t = trials[0] if len(trials) == 1 else Trials.concatenate(list(trials))

    def f(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a).to(device=device, dtype=dtype)

    discrete = t.actions.ndim == 2
    return TrialBatch(
        obs=f(t.obs),
        actions=torch.as_tensor(t.actions).to(device=device, dtype=torch.long) if discrete else f(t.actions),
        prev_actions=f(t.prev_actions),
        prev_rewards=f(t.prev_rewards),
        prev_dones=f(t.prev_dones),
        rewards=f(t.rewards),
        trial_end=f(t.trial_end),
        mask=f(t.mask),
        log_probs=f(t.log_probs),
        values=f(t.values),
        initial_state=f(t.initial_state),
    )


# --- advantages ---------------------------------------------------------------------------------
def gae_over_trial(rewards: Tensor, values: Tensor, trial_end: Tensor, mask: Tensor, *, gamma: float,
                   lam: float) -> Tensor:
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16) over each trial column.

    ``δ_t = r_t + γ (1 - end_t) V_{t+1} - V_t`` and ``A_t = δ_t + γλ (1 - end_t) A_{t+1}``, where
    ``end_t`` marks the trial's last step: an episode end inside a trial is no boundary (RL²'s
    trial is one long interaction with one MDP), and the value after a trial's last step -- or
    after the last real step of a column that has no ``trial_end`` -- is 0.

    Args:
        rewards, values, trial_end, mask: ``[T, B]``; padding (``mask`` 0) is ignored.

    Returns:
        The advantages ``[T, B]``, 0 on padding.
    """
    m = mask.to(rewards.dtype)
    not_end = 1.0 - trial_end.to(rewards.dtype)
    next_values = torch.cat([values[1:] * m[1:], torch.zeros_like(values[:1])])
    deltas = (rewards + gamma * not_end * next_values - values) * m
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * lam * not_end[t] * running
        out[t] = running
    return out * m


# --- the loss -----------------------------------------------------------------------------------
def ppo_loss(
    policy: RecurrentPolicy,
    params: Params,
    trials_batch: TrialBatch,
    old_log_probs: Tensor,
    advantages: Tensor,
    returns: Tensor,
    *,
    clip: float,
    value_coef: float,
    entropy_coef: float,
) -> tuple[Tensor, dict[str, float]]:
    """PPO's loss (Schulman et al. 2017, eq. 9 with the clipped surrogate of eq. 7) over whole
    trials, unrolled from each trial's stored ``initial_state`` (back-propagation through time
    over the whole trial).

    ``loss = -mean(min(ρ A, clip(ρ, 1-ε, 1+ε) A)) + value_coef mean((V - R)²) - entropy_coef mean(H)``
    with ``ρ = exp(log π(a) - old_log_probs)``; each mean is over the real steps of the batch
    (``mask``: the sum over every trial's steps divided by their number).

    Returns:
        ``(loss, stats)``: ``stats`` has the terms (``policy``, ``value``, ``entropy``), the
        sample estimate of KL(old || new) (``kl``) and the fraction of clipped ratios
        (``clip_frac``), as floats.
    """
    b = trials_batch
    dist, values, _ = policy.unroll(params, b.obs, b.prev_actions, b.prev_rewards, b.prev_dones, b.initial_state)
    real = b.mask > 0
    count = b.mask.sum().clamp_min(1.0)

    def mean(x: Tensor) -> Tensor:
        return torch.where(real, x, torch.zeros_like(x)).sum() / count

    log_probs = policy.log_prob(dist, b.actions)
    log_ratio = torch.where(real, log_probs - old_log_probs, torch.zeros_like(log_probs))
    ratio = torch.exp(log_ratio)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1.0 - clip, 1.0 + clip) * advantages)
    policy_loss = -mean(surrogate)
    value_loss = mean((values - returns).pow(2))
    entropy = mean(policy.entropy(dist))
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
    with torch.no_grad():
        stats = {
            "policy": float(policy_loss),
            "value": float(value_loss),
            "entropy": float(entropy),
            "kl": float(mean(-log_ratio)),
            "clip_frac": float(mean(((ratio - 1.0).abs() > clip).to(ratio.dtype))),
        }
    return loss, stats


# --- the learner --------------------------------------------------------------------------------
def recurrent_spec_for(policy_spec: Any, spec: RL2Spec) -> RecurrentPolicySpec:
    """The recurrent policy RL² trains for ``policy_spec``: a :class:`RecurrentPolicySpec` as it is
    (its GRU and encoder sizes must be ``spec``'s), or the recurrent policy of ``spec``'s sizes for
    anything with ``obs_dim``, ``act_dim`` and ``discrete`` (a job's
    :class:`~algorithms.policies.PolicySpec`: its activation and ``init_std`` carry over)."""
    if isinstance(policy_spec, RecurrentPolicySpec):
        if policy_spec.hidden_size != spec.hidden_size or policy_spec.encoder_sizes != tuple(spec.encoder_sizes):
            raise ValueError(
                f"the policy spec has hidden_size={policy_spec.hidden_size}, encoder_sizes="
                f"{policy_spec.encoder_sizes}; the RL² spec says {spec.hidden_size}, {tuple(spec.encoder_sizes)}"
            )
        return policy_spec
    return RecurrentPolicySpec(
        obs_dim=int(policy_spec.obs_dim), act_dim=int(policy_spec.act_dim), discrete=bool(policy_spec.discrete),
        encoder_sizes=tuple(spec.encoder_sizes), hidden_size=spec.hidden_size,
        activation=getattr(policy_spec, "activation", "tanh"), init_std=float(getattr(policy_spec, "init_std", 1.0)),
    )


class RL2Learner(HoldsPolicy):
    """Recurrent PPO over trials (see the module docstring).

    Args:
        policy_spec: the policy (see :func:`recurrent_spec_for`).
        spec: the configuration (defaults: :class:`RL2Spec`'s).
        advantage: the job's advantage section, taken for the registry's learner signature; only
            its ``normalize`` is used (RL² has its own ``gamma`` and ``gae_lambda``).
        seed: the initial parameters and the minibatch order.
        device: where the learner computes.
    """

    name = "rl2"
    policy: RecurrentPolicy

    def __init__(self, policy_spec: RecurrentPolicySpec | Any, spec: RL2Spec | None = None, *,
                 advantage: AdvantageSpec | None = None, seed: int = 0, device: str | torch.device = "cpu") -> None:
        self.config = spec or RL2Spec()
        self.device = torch.device(device)
        self.normalize_advantages = True if advantage is None else advantage.normalize
        self.policy = make_recurrent_policy(recurrent_spec_for(policy_spec, self.config), seed=seed).to(self.device)
        self._optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.lr, eps=1e-5)
        self._gen = torch.Generator().manual_seed(seed)
        self.iteration = 0

    def advantages(self, batch: TrialBatch) -> tuple[Tensor, Tensor]:
        """``(advantages, returns)`` of a batch from its stored values: GAE over each trial of the
        rewards times ``reward_scale`` (the value head learns scaled returns), returns ``A + V``;
        the advantages standardised over the real steps where configured."""
        cfg = self.config
        with torch.no_grad():
            adv = gae_over_trial(batch.rewards * cfg.reward_scale, batch.values, batch.trial_end, batch.mask,
                                 gamma=cfg.gamma, lam=cfg.gae_lambda)
            returns = (adv + batch.values) * batch.mask
            if self.normalize_advantages:
                adv = normalize(adv, batch.mask)
        return adv, returns

    def learn(self, phases: Sequence[Sequence[Trials]]) -> UpdateMetrics:
        """One PPO update from an iteration's phases -- RL²'s plan has one: the trials of the
        meta-batch's tasks (one :class:`Trials` per task).

        Raises:
            NonFiniteError: an input, a loss, a gradient or the new parameters are NaN/inf; the
                parameters and the optimizer's state are left as they were.
        """
        if len(phases) != 1 or not phases[0]:
            raise ValueError(f"RL2Learner.learn takes one phase of trials, got {[len(p) for p in phases]}")
        trials = list(phases[0])
        cfg = self.config
        dtype = next(self.policy.parameters()).dtype
        batch = make_trial_batch(trials, dtype=dtype, device=self.device)
        for f in fields(batch):
            v = getattr(batch, f.name)
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise NonFiniteError(f"the trials' {f.name} are not finite (NaN or inf); the update was rejected")
        adv, returns = self.advantages(batch)
        backup = self.params
        optimizer_backup = copy.deepcopy(self._optimizer.state_dict())

        def reject(what: str) -> NonFiniteError:
            self._set_params(backup)
            self._optimizer.load_state_dict(optimizer_backup)
            return NonFiniteError(f"RL² {what} is not finite (NaN or inf); the update was rejected")

        sums: dict[str, float] = {}
        updates = 0
        params: Params = dict(self.policy.named_parameters())  # the module's own: the optimizer steps them
        for _ in range(cfg.epochs):
            data, data_adv, data_ret = batch, adv, returns
            if cfg.bptt_chunk is not None and cfg.bptt_chunk < batch.mask.shape[0]:
                with torch.no_grad():  # where the current policy's state is at every step
                    _, _, states = self.policy.unroll(params, batch.obs, batch.prev_actions, batch.prev_rewards,
                                                      batch.prev_dones, batch.initial_state)
                data, (data_adv, data_ret) = chunk_batch(batch, states, [adv, returns], cfg.bptt_chunk)
            n = data.num_trials
            size = max(1, math.ceil(n / cfg.minibatches))
            perm = torch.randperm(n, generator=self._gen).to(self.device)
            for start in range(0, n, size):
                cols = perm[start : start + size]
                sub = data.select(cols)
                steps = sub.mask.shape[0]
                loss, stats = ppo_loss(
                    self.policy, params, sub, sub.log_probs, data_adv[:steps, cols], data_ret[:steps, cols],
                    clip=cfg.clip, value_coef=cfg.value_coef, entropy_coef=cfg.entropy_coef,
                )
                if not torch.isfinite(loss):
                    raise reject("PPO loss")
                self._optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                if not torch.isfinite(grad_norm):
                    raise reject("gradient")
                self._optimizer.step()
                stats["grad_norm"] = float(grad_norm)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                updates += 1
        if not all(torch.isfinite(v).all() for v in self.policy.parameters()):
            raise reject("meta-parameters")
        with torch.no_grad():
            dist, _, _ = self.policy.unroll(self.params, batch.obs, batch.prev_actions, batch.prev_rewards,
                                            batch.prev_dones, batch.initial_state)
            log_ratio = self.policy.log_prob(dist, batch.actions) - batch.log_probs
            kl = float((torch.where(batch.mask > 0, -log_ratio, torch.zeros_like(log_ratio))).sum()
                       / batch.mask.sum().clamp_min(1.0))
        mean = {k: v / updates for k, v in sums.items()}
        metrics = {
            "loss/policy": mean["policy"],
            "loss/value": mean["value"],
            "loss/entropy": mean["entropy"],
            "meta/kl": kl,
            "meta/clip_frac": mean["clip_frac"],
            "meta/grad_norm": mean["grad_norm"],
            **trial_metrics(trials),
        }
        self.iteration += 1
        return UpdateMetrics(metrics)

    def adapt(self, params: Any, data: Any) -> Any:
        raise TypeError("RL² adapts in its hidden state within a trial; it takes no inner step")

    def state_dict(self) -> LearnerState:
        cfg = self.config
        return LearnerState(
            algorithm=self.name,
            # LearnerState types its policy spec as the MLP's; a checkpoint pickles whichever it is
            policy_spec=cast(Any, self.policy.spec),
            config=cfg,
            params={k: v.detach().cpu().clone() for k, v in self.params.items()},
            optimizer=copy.deepcopy(self._optimizer.state_dict()),
            iteration=self.iteration,
            advantage=AdvantageSpec(gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, normalize=self.normalize_advantages),
        )

    def load_state_dict(self, state: LearnerState) -> None:
        if state.algorithm != self.name:
            raise ValueError(f"checkpoint is for {state.algorithm!r}, this learner is {self.name!r}")
        self._set_params({k: v.to(self.device) for k, v in state.params.items()})
        if state.optimizer is not None:
            self._optimizer.load_state_dict(state.optimizer)
        self.iteration = state.iteration


def trial_metrics(trials: Sequence[Trials]) -> dict[str, float]:
    """Mean return (and success rate, where the family reports success) per episode index of the
    trials (``meta/return_episode{n}``), and of their first and last episodes: how fast the policy
    adapts within a trial."""
    t = trials[0] if len(trials) == 1 else Trials.concatenate(list(trials))
    returns = t.returns_per_episode()
    out = {f"meta/return_episode{n}": float(returns[:, n].mean()) for n in range(returns.shape[1])}
    out["meta/return_first_episode"] = float(returns[:, 0].mean())
    out["meta/return_last_episode"] = float(returns[:, -1].mean())
    if t.has_success:
        success = t.success_per_episode()
        out.update({f"meta/success_episode{n}": float(success[:, n].mean()) for n in range(success.shape[1])})
        out["meta/success_first_episode"] = float(success[:, 0].mean())
        out["meta/success_last_episode"] = float(success[:, -1].mean())
    return out


__all__ = ["RL2Learner", "TrialBatch", "chunk_batch", "gae_over_trial", "make_trial_batch", "ppo_loss",
           "recurrent_spec_for", "trial_metrics"]
