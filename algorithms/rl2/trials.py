"""The typed container RL²'s trials travel in (Duan et al. 2016, sec. 2.2: a *trial* is
``N`` episodes of one task, back to back, with the policy's hidden state carried across them).

Like :class:`algorithms.episodes.Episodes` the arrays are time-major ``[T, B, ...]``: column ``b``
is one trial that starts at ``t = 0``, ``T`` is the longest trial's number of steps and
``mask[t, b]`` is 1 for the steps the trial really took.  Within a column the episodes follow one
another: ``dones[t, b]`` marks the last step of an episode, ``trial_end[t, b]`` the last step of
the trial (the last episode's last step), ``episode_index[t, b]`` says which episode of the trial
step ``t`` belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the ``[T, B, ...]`` arrays (padded with zeros past a trial's end)
_TIME_FIELDS = (
    "obs", "actions", "prev_actions", "prev_rewards", "prev_dones", "rewards", "dones", "trial_end", "mask",
    "log_probs", "values", "success", "episode_index",
)


@dataclass
class TrialState:
    """Where a trial stands between two steps, per trial: the policy's hidden state and the
    "previous step" inputs of the next step (the action applied, the reward, whether the step
    ended an episode).  A trial that starts from one (``TrialSampler.sample(start=...)``) goes on
    from there: the adapted state of RL²'s meta-test.

    Attributes:
        state: float32 ``[B, hidden]``.
        prev_action: float32 ``[B, act_dim]`` (one-hot for discrete actions).
        prev_reward: float32 ``[B]``.
        prev_done: float32 ``[B]``.
    """

    state: np.ndarray
    prev_action: np.ndarray
    prev_reward: np.ndarray
    prev_done: np.ndarray

    def __post_init__(self) -> None:
        b = self.state.shape[0]
        if self.state.ndim != 2 or self.prev_action.ndim != 2 or self.prev_action.shape[0] != b or \
                self.prev_reward.shape != (b,) or self.prev_done.shape != (b,):
            raise ValueError(
                f"TrialState: state {self.state.shape}, prev_action {self.prev_action.shape}, prev_reward "
                f"{self.prev_reward.shape}, prev_done {self.prev_done.shape} do not describe the same trials"
            )

    @property
    def num_trials(self) -> int:
        return int(self.state.shape[0])

    @staticmethod
    def zeros(num: int, hidden: int, act_dim: int) -> TrialState:
        """A trial's start: zero state and zero inputs."""
        z = np.zeros(num, np.float32)
        return TrialState(np.zeros((num, hidden), np.float32), np.zeros((num, act_dim), np.float32), z, z.copy())

    def select(self, rows: np.ndarray | slice) -> TrialState:
        return TrialState(self.state[rows], self.prev_action[rows], self.prev_reward[rows], self.prev_done[rows])

    def repeat(self, times: int) -> TrialState:
        """Each trial's state ``times`` times in a row (``[s0, s0, ..., s1, s1, ...]``): the
        evaluation episodes that each start from one adapted state."""
        return TrialState(*(np.repeat(a, times, axis=0) for a in
                            (self.state, self.prev_action, self.prev_reward, self.prev_done)))

    @staticmethod
    def concatenate(parts: list[TrialState]) -> TrialState:
        return TrialState(*(np.concatenate([getattr(p, f) for p in parts], axis=0)
                            for f in ("state", "prev_action", "prev_reward", "prev_done")))


@dataclass
class Trials:
    """The trials of ONE task, time-major ``[T, B, ...]`` (see the module docstring).

    Attributes:
        obs: float32 ``[T, B, obs_dim]``, the observation the action was taken in.
        actions: float32 ``[T, B, act_dim]`` (continuous) or int64 ``[T, B]`` (discrete), as
            sampled (before any clipping to the action space): what the log-probabilities are of.
        prev_actions: float32 ``[T, B, act_dim]``, the previous step's action as the policy takes
            it: the action applied to the env (clipped where the family clips) or its one-hot
            encoding; zeros at a trial's first step (or the start's, for a trial that goes on from
            a :class:`TrialState`).  Carried across episode boundaries.
        prev_rewards: float32 ``[T, B]``, the previous step's reward (0 at a trial's first step).
        prev_dones: float32 ``[T, B]``, 1.0 where the previous step ended an episode.
        rewards: float32 ``[T, B]``.
        dones: bool ``[T, B]``, the step ended an episode (terminated, truncated or the horizon).
        trial_end: bool ``[T, B]``, the step ended the trial (its last episode's end).
        mask: float32 ``[T, B]``, 1 for real steps, 0 for padding.
        log_probs: float32 ``[T, B]``, log-probability of the action under the behaviour policy.
        values: float32 ``[T, B]``, the behaviour policy's value estimates.
        success: float32 ``[T, B]``, ``info["success"]`` where the family reports it, else 0.
        episode_index: int64 ``[T, B]``, the episode of the trial the step belongs to
            (``0 .. N-1``; -1 on padding).
        initial_state: float32 ``[B, hidden]``, the policy's state before each trial's first step.
        has_success: the family reports success (so success rates mean something).
        states: optional float32 ``[T, B, hidden]``, the state entering each step
            (``states[0] = initial_state``), kept by samplers on request (diagnostics, tests).
        end: where each trial stood after its last step (its state and the next step's inputs),
            where the sampler says: a trial can go on from it.
    """

    obs: np.ndarray
    actions: np.ndarray
    prev_actions: np.ndarray
    prev_rewards: np.ndarray
    prev_dones: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    trial_end: np.ndarray
    mask: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    success: np.ndarray
    episode_index: np.ndarray
    initial_state: np.ndarray
    has_success: bool = False
    states: np.ndarray | None = None
    end: TrialState | None = None

    def __post_init__(self) -> None:
        t, b = self.rewards.shape
        for name in ("prev_rewards", "prev_dones", "dones", "trial_end", "mask", "log_probs", "values", "success",
                     "episode_index"):
            shape = getattr(self, name).shape
            if shape != (t, b):
                raise ValueError(f"Trials.{name} has shape {shape}, expected {(t, b)}")
        for name in ("obs", "actions", "prev_actions"):
            shape = getattr(self, name).shape
            if shape[:2] != (t, b):
                raise ValueError(f"Trials.{name} has shape {shape}, which does not start with {(t, b)}")
        if self.initial_state.ndim != 2 or self.initial_state.shape[0] != b:
            raise ValueError(f"Trials.initial_state has shape {self.initial_state.shape}, expected ({b}, hidden)")
        if self.states is not None and self.states.shape != (t, b, self.initial_state.shape[1]):
            raise ValueError(
                f"Trials.states has shape {self.states.shape}, expected {(t, b, self.initial_state.shape[1])}"
            )

    # --- sizes -------------------------------------------------------------------------------
    @property
    def horizon(self) -> int:
        """``T``: the longest trial's steps."""
        return int(self.rewards.shape[0])

    @property
    def num_trials(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def num_steps(self) -> int:
        """Env steps actually taken (padding excluded)."""
        return int(self.mask.sum())

    @property
    def episodes_per_trial(self) -> int:
        """``N``: episodes per trial (the most any column has)."""
        return int((self.dones & (self.mask > 0)).sum(axis=0).max(initial=0))

    # --- per episode of the trial ------------------------------------------------------------
    def _per_episode(self, values: np.ndarray, reduce: str) -> np.ndarray:
        n = self.episodes_per_trial
        real = (self.mask > 0)[..., None] & (self.episode_index[..., None] == np.arange(n))  # [T, B, N]
        v = np.where(real, values[..., None], 0.0)
        return (v.sum(axis=0) if reduce == "sum" else v.max(axis=0, initial=0.0)).astype(np.float64)

    def returns_per_episode(self) -> np.ndarray:
        """Undiscounted return of each episode of each trial, ``[B, N]``: how fast it adapts."""
        return self._per_episode(self.rewards, "sum")

    def success_per_episode(self) -> np.ndarray:
        """1 for an episode that reached success at any of its steps (Meta-World's rule), ``[B, N]``."""
        return self._per_episode(self.success, "max")

    # --- combining ---------------------------------------------------------------------------
    def select(self, columns: np.ndarray | slice) -> Trials:
        """The trials of the given columns."""
        out = {f: getattr(self, f)[:, columns] for f in _TIME_FIELDS}
        return Trials(**out, initial_state=self.initial_state[columns], has_success=self.has_success,
                      states=None if self.states is None else self.states[:, columns],
                      end=None if self.end is None else self.end.select(columns))

    def pad_to(self, horizon: int) -> Trials:
        """Zero-pad (mask 0, episode index -1) to ``horizon`` steps."""
        extra = horizon - self.horizon
        if extra < 0:
            raise ValueError(f"cannot pad {self.horizon} steps down to {horizon}")
        if extra == 0:
            return self

        def pad(a: np.ndarray, value: float = 0) -> np.ndarray:
            return np.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1), constant_values=value)

        out = {f: pad(getattr(self, f), -1 if f == "episode_index" else 0) for f in _TIME_FIELDS}
        return Trials(**out, initial_state=self.initial_state, has_success=self.has_success,
                      states=None if self.states is None else pad(self.states), end=self.end)

    @staticmethod
    def concatenate(parts: list[Trials]) -> Trials:
        """Trials of several batches side by side (padded to the longest); ``states`` are kept
        only where every part has them."""
        if not parts:
            raise ValueError("Trials.concatenate needs at least one batch")
        horizon = max(p.horizon for p in parts)
        padded = [p.pad_to(horizon) for p in parts]
        out = {f: np.concatenate([getattr(p, f) for p in padded], axis=1) for f in _TIME_FIELDS}
        keep = all(p.states is not None for p in padded)
        ends = [p.end for p in padded if p.end is not None]
        return Trials(
            **out,
            initial_state=np.concatenate([p.initial_state for p in padded], axis=0),
            has_success=any(p.has_success for p in padded),
            states=np.concatenate([p.states for p in padded if p.states is not None], axis=1) if keep else None,
            end=TrialState.concatenate(ends) if len(ends) == len(padded) else None,
        )


__all__ = ["TrialState", "Trials"]
