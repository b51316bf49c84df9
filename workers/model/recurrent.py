"""RL²'s trained meta-policy as a user holds it: a recurrent policy that adapts in its hidden
state, not by inner steps (Duan et al. 2016; Wang et al. 2016).

:class:`RecurrentMetaPolicy` is what ``MetaPolicy.load`` returns for an RL² model (the card's
``policy_kind`` is ``"recurrent"``).  It is *stateful*: it holds where its trial stands -- the GRU
state and the "previous step" inputs of the next step (:class:`~algorithms.rl2.trials.TrialState`)
-- and every :meth:`~RecurrentMetaPolicy.act` advances it::

    p = MetaPolicy.load("models:/rl2-nav/1")      # a RecurrentMetaPolicy, state at zeros
    q = p.adapt(task, episodes=10)                # 10 episodes of one trial; q holds the state they left
    obs, _ = env.reset()
    a = q.act(obs)                                # the next step of the trial
    obs, r, term, trunc, _ = env.step(a)
    q.observe(r, term or trunc)                   # the next act sees the reward and the episode end

The step's input is the observation, the previous action as the env applied it (clipped to the
action space where the family clips, one-hot for a discrete action), the previous reward and
whether the previous step ended an episode -- what the trial sampler
(:mod:`workers.trial_sampler`) fed the policy in training.  ``adapt`` runs ``episodes`` episodes
as one trial (a task of the model's family through the trial sampler, or a gymnasium env stepped
one episode after another) and returns a new policy holding the state they left; ``mean_return``
measures episodes that each start from the policy's current state.

The meta-test (:meth:`RecurrentMetaPolicy.meta_test`, what :mod:`workers.evaluate` runs) is the
algorithm's registered plan (:func:`algorithms.plans.trial_plan`: one evaluation phase, no inner
step) run by the phase runner over a :class:`TrialMetaTestSource`: per task a trial of ``K``
adaptation episodes, then evaluation episodes that each start from the state it left
(Meta-World's protocol; :meth:`workers.trial_sampler.TrialPhaseSampler.meta_test`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch

from algorithms import registry
from algorithms.plans import IterationPlan, Phase
from algorithms.policies import Params
from algorithms.rl2.policy import RecurrentPolicy, RecurrentPolicySpec, make_recurrent_policy
from algorithms.rl2.spec import RL2Spec
from algorithms.rl2.trials import Trials, TrialState
from workers.contract import JobSpec
from workers.envs import Task, TaskFamily
from workers.model import env_rollout
from workers.model.policy import BaseMetaPolicy, ModelFormatError, _check_positive
from workers.runner import Collected, collect
from workers.trial_sampler import TrialPhaseSampler, TrialSampler

#: At most this many sub-envs are stepped at once by a meta-test (:mod:`workers.evaluate`, whose
#: tasks go in chunks that fit) and by :meth:`RecurrentMetaPolicy.mean_return`.
MAX_ENVS = 64


class RecurrentMetaPolicy(BaseMetaPolicy):
    """RL²'s meta-policy: a GRU policy and the state of the trial it is in (see the module
    docstring).

    The state has one row per trial: one after loading, :meth:`reset` or :meth:`adapt`; ``N``
    after :meth:`act` on a batch of ``N`` observations (a one-row state is repeated for the
    batch: ``N`` trials that go on from the same state).

    Args:
        spec: the job spec that trained it (an RL² job).
        policy_spec: the recurrent policy's architecture.
        params: the policy's parameters (θ; RL² adapts the state, never the parameters).
        algorithm: the algorithm's registered name (``"rl2"``).
        iteration: meta-iterations trained.
        source: where it was loaded from.
        training_run_id: the MLflow run that trained it.
        action_bounds: ``(low, high)`` of a continuous action space (read from the family when
            omitted).
        clips_actions: whether the family clips continuous actions to the action space before
            the env steps (so the previous action the policy sees is the clipped one); read from
            the family when omitted.
        trial_state: the state of the trial (zeros, one trial, when omitted).
        adapted_episodes: episodes of adaptation this state holds (for display).
    """

    kind = "recurrent"
    policy_spec_type = RecurrentPolicySpec
    _policy: RecurrentPolicy
    _policy_spec: RecurrentPolicySpec

    def __init__(
        self,
        *,
        spec: JobSpec,
        policy_spec: RecurrentPolicySpec,
        params: Params,
        algorithm: str,
        iteration: int = 0,
        source: str = "",
        training_run_id: str | None = None,
        action_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
        clips_actions: bool | None = None,
        trial_state: TrialState | None = None,
        adapted_episodes: int = 0,
    ) -> None:
        super().__init__(spec=spec, policy_spec=policy_spec, params=params, algorithm=algorithm, iteration=iteration,
                         source=source, training_run_id=training_run_id, action_bounds=action_bounds)
        self._clips = clips_actions
        self._state = self._checked_state(trial_state) if trial_state is not None else self._zeros()
        self.adapted_episodes = int(adapted_episodes)

    def __repr__(self) -> str:
        return (
            f"RecurrentMetaPolicy({self.algorithm} on {self._spec.task_family.name}, source={self.source!r}, "
            f"trials={self._state.num_trials}, adapted_episodes={self.adapted_episodes})"
        )

    # ---- what it is ----
    @property
    def policy_spec(self) -> RecurrentPolicySpec:
        return self._policy_spec

    @property
    def rl2(self) -> RL2Spec:
        """The RL² section of the job spec (episodes per trial, GRU sizes, ...)."""
        return cast(RL2Spec, self._spec.algorithm)

    @property
    def clips_actions(self) -> bool:
        """Whether the env applies a continuous action clipped to the action space (the family's
        rule, stored with the model): the previous action the policy is fed is then the clipped one."""
        if self._clips is None:
            self._clips = bool(self.family.clips_actions)
        return self._clips

    @property
    def state(self) -> TrialState:
        """A copy of where the trial stands: the hidden state ``[trials, hidden]`` and the next
        step's previous action, reward and done flag."""
        s = self._state
        return TrialState(s.state.copy(), s.prev_action.copy(), s.prev_reward.copy(), s.prev_done.copy())

    def reset(self) -> None:
        """Start a new trial: zero state and inputs (one trial)."""
        self._state = self._zeros()

    def with_state(self, state: TrialState) -> RecurrentMetaPolicy:
        """The same model holding ``state`` (e.g. one row of a batch's: ``p.state.select([i])``)."""
        return self._derived(self._checked_state(state), episodes=0)

    # ---- its kind ----
    @classmethod
    def _make_module(cls, policy_spec: Any) -> torch.nn.Module:
        if not isinstance(policy_spec, RecurrentPolicySpec):
            raise ModelFormatError(f"a recurrent meta-policy needs a RecurrentPolicySpec, got {policy_spec!r}")
        return make_recurrent_policy(policy_spec)

    @classmethod
    def _from_card(cls, card: dict[str, Any], params: Params, *, source: str) -> RecurrentMetaPolicy:
        ps = dict(card["policy_spec"])
        ps["encoder_sizes"] = tuple(ps["encoder_sizes"])
        saved = card.get("trial_state")
        state = None
        if saved is not None:
            state = TrialState(*(np.asarray(saved[k], np.float32) for k in
                                 ("state", "prev_action", "prev_reward", "prev_done")))
        return cls(
            spec=JobSpec.model_validate(card["job_spec"]),
            policy_spec=RecurrentPolicySpec(**ps),
            params=params,
            algorithm=card["algorithm"],
            iteration=card.get("iteration", 0),
            source=source,
            training_run_id=card.get("run_id"),
            action_bounds=card.get("action_bounds"),
            clips_actions=card.get("clips_actions"),
            trial_state=state,
            adapted_episodes=card.get("adapted_episodes", 0),
        )

    @classmethod
    def _from_state(cls, spec: JobSpec, state: Any, *, source: str) -> RecurrentMetaPolicy:
        return cls(spec=spec, policy_spec=state.policy_spec, params=state.params, algorithm=state.algorithm,
                   iteration=state.iteration, source=source)

    def _card_fields(self) -> dict[str, Any]:
        s = self._state
        fresh = s.num_trials == 1 and not (s.state.any() or s.prev_action.any() or s.prev_reward.any()
                                           or s.prev_done.any())
        return {
            "clips_actions": self.clips_actions,
            "adapted_episodes": self.adapted_episodes,
            # the adapted state travels with the model (float32 values are exact as JSON numbers)
            "trial_state": None if fresh else {
                "state": s.state.tolist(), "prev_action": s.prev_action.tolist(),
                "prev_reward": s.prev_reward.tolist(), "prev_done": s.prev_done.tolist(),
            },
        }

    # ---- acting ----
    def act(self, obs: np.ndarray | Sequence[float], deterministic: bool = True, *, clip: bool = True) -> np.ndarray:
        """The next step of the trial for one observation ``[obs_dim]`` or a batch ``[N, obs_dim]``
        (``N`` trials; a one-trial state is repeated for them): advances the hidden state on the
        observation and the stored previous action, reward and done flag, and stores this step's
        action (as the env applies it) as the next step's previous action.  Call :meth:`observe`
        with what the env returned before the next ``act`` (until then the next step sees reward
        0 and no episode end).

        Returns what :meth:`workers.model.MetaPolicy.act` does: ``[act_dim]`` / ``[N, act_dim]``
        float32 Gaussian means (``deterministic``) or samples, clipped to the action space unless
        ``clip`` is False; or a scalar / ``[N]`` int64 action of a discrete policy.
        """
        x = self._check_obs(obs)
        single = x.ndim == 1
        batch = x[None] if single else x
        start = self._state
        if start.num_trials != len(batch):
            if start.num_trials != 1 or single:
                raise ValueError(
                    f"the policy holds the state of {start.num_trials} trials, got {len(batch)} observation(s); "
                    "pass one observation per trial, or reset() to start new trials"
                )
            start = start.repeat(len(batch))
        bounds = self.action_bounds if self.clips_actions else None
        raw, self._state = self._step(batch, start, deterministic=deterministic, gen=self._gen, bounds=bounds)
        out = self._clip(raw) if clip else raw
        return out[0] if single else out

    def observe(self, reward: float | np.ndarray | Sequence[float], done: bool | np.ndarray | Sequence[bool]) -> None:
        """What the env returned for the last :meth:`act`: the reward and whether the step ended
        the episode (terminated or truncated), per trial (a scalar for one trial, or for all);
        the next ``act`` is fed them (and, after an episode end, the next episode's first
        observation: the trial goes on across episodes)."""
        n = self._state.num_trials
        try:
            r = np.array(np.broadcast_to(np.asarray(reward, np.float32), (n,)))
            d = np.array(np.broadcast_to(np.asarray(done, np.float32), (n,)))
        except ValueError:
            raise ValueError(
                f"observe takes a reward and a done flag for each of the {n} trial(s), got shapes "
                f"{np.shape(reward)} and {np.shape(done)}"
            ) from None
        s = self._state
        self._state = TrialState(s.state, s.prev_action, r, d)

    def act_history(
        self,
        obs: np.ndarray,
        prev_action: np.ndarray,
        prev_reward: np.ndarray,
        prev_done: np.ndarray,
        state: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The deterministic actions of ``T`` steps of one trial from its inputs (the pyfunc
        model's ``predict``): ``obs [T, obs_dim]``, ``prev_action [T, act_dim]`` (the action the
        env applied on the step before; for a discrete policy one-hot, or ``[T]`` action
        indices), ``prev_reward [T]``, ``prev_done [T]`` and the hidden state before the first
        step, ``state [hidden]`` (zeros: a new trial).  Does not touch the policy's own state.

        Returns ``(actions, state)``: ``[T, act_dim]`` float32 Gaussian means clipped to the
        action space (``[T]`` int64 argmax actions for a discrete policy), and the hidden state
        after the last step ``[hidden]``.  The steps are taken one at a time, exactly as
        :meth:`act` takes them, so the result equals :meth:`act` step by step with
        :meth:`observe` in between, bit for bit (the policy's fused ``unroll`` over the whole
        history agrees with it to float rounding).
        """
        ps = self._policy_spec
        x = np.asarray(obs, np.float32)
        if x.ndim != 2 or x.shape[1] != ps.obs_dim:
            raise ValueError(f"obs must have shape [T, {ps.obs_dim}], got {list(x.shape)}")
        t = x.shape[0]
        a = np.asarray(prev_action)
        if ps.discrete and a.shape == (t,):
            if not np.all((a >= 0) & (a < ps.act_dim) & (a == np.round(a))):
                raise ValueError(f"prev_action: discrete actions must be integers in [0, {ps.act_dim})")
            a = np.eye(ps.act_dim, dtype=np.float32)[a.astype(np.int64)]
        a = np.asarray(a, np.float32)
        if a.shape != (t, ps.act_dim):
            raise ValueError(f"prev_action must have shape [{t}, {ps.act_dim}], got {list(a.shape)}")
        r, d = np.asarray(prev_reward, np.float32), np.asarray(prev_done, np.float32)
        if r.shape != (t,) or d.shape != (t,):
            raise ValueError(f"prev_reward and prev_done must have shape [{t}], got {list(r.shape)}, {list(d.shape)}")
        h = np.zeros((1, ps.hidden_size), np.float32) if state is None else np.asarray(state, np.float32)[None]
        if h.shape != (1, ps.hidden_size):
            raise ValueError(f"state must have shape [{ps.hidden_size}], got {list(h.shape[1:])}")
        actions = []
        for i in range(t):
            start = TrialState(h, a[i : i + 1], r[i : i + 1], d[i : i + 1])
            raw, after = self._step(x[i : i + 1], start, deterministic=True, gen=self._gen, bounds=None)
            actions.append(raw[0])
            h = after.state
        out = np.stack(actions) if actions else np.zeros((0,) if ps.discrete else (0, ps.act_dim),
                                                          np.int64 if ps.discrete else np.float32)
        return self._clip(out), h[0].copy()

    # ---- adapting and measuring ----
    def adapt(self, task_or_env: Task | gym.Env, *, episodes: int = 10, steps: int = 1,
              seed: int = 0) -> RecurrentMetaPolicy:
        """A new policy holding the state that ``episodes`` episodes of one trial on
        ``task_or_env`` left (actions sampled: the policy explores); this one is unchanged.  The
        trial goes on from this policy's state (zeros for a freshly loaded or reset policy).

        Args:
            task_or_env: a task of the model's family (``self.family.sample_tasks(...)``), run by
                the :class:`~workers.trial_sampler.TrialSampler`, or a gymnasium env with the
                model's observation and action spaces, stepped one episode after another.
            episodes: episodes of the trial.
            steps: must be 1: RL² adapts within the trial, it takes no inner steps (the argument
                is there so that code written for :class:`~workers.model.MetaPolicy` runs).
            seed: seeds the env resets and the action noise.
        """
        _check_steps(steps)
        _check_positive(episodes=episodes)
        start = self._one_trial("adapt")
        if isinstance(task_or_env, Task):
            self._check_tasks([task_or_env])
            sampler = TrialSampler(self.family, self._policy_spec, trials_per_task=1, seed=seed)
            try:
                (trial,) = sampler.sample([task_or_env], self._params, episodes_per_trial=episodes, start=start)
            finally:
                sampler.close()
            assert trial.end is not None  # the sampler says where every trial ended
            end = trial.end
        elif isinstance(task_or_env, gym.Env):
            self._check_env(task_or_env)
            gen = torch.Generator().manual_seed(seed)
            end = start
            for e in range(episodes):
                _, _, end = self._env_episode(task_or_env, end, seed=seed * 100_003 + e, gen=gen, deterministic=False)
        else:
            raise TypeError(f"adapt takes a workers.envs.Task or a gymnasium.Env, got {type(task_or_env).__name__}")
        return self._derived(end, episodes=episodes)

    def mean_return(self, task_or_env: Task | gym.Env, *, episodes: int = 10, seed: int = 1) -> float:
        """The mean undiscounted return of ``episodes`` episodes on ``task_or_env`` that each
        start from this policy's state (zeros for a fresh policy; the adapted state after
        :meth:`adapt`), actions sampled; the state is left as it is.

        ``seed`` seeds the env resets and the action noise; its default differs from
        :meth:`adapt`'s so that the episodes measured are not the adaptation episodes.
        """
        _check_positive(episodes=episodes)
        start = self._one_trial("mean_return")
        if isinstance(task_or_env, Task):
            self._check_tasks([task_or_env])
            sampler = TrialPhaseSampler(self.family, self._policy_spec, episodes_per_trial=1,
                                        envs_per_task=min(episodes, MAX_ENVS), seed=seed)
            try:
                (trials,) = sampler.trials([task_or_env], self._params, trials_per_task=episodes, episodes_per_trial=1,
                                           start=start.repeat(episodes))
            finally:
                sampler.close()
            returns = trials.returns_per_episode()[:, 0]
        elif isinstance(task_or_env, gym.Env):
            self._check_env(task_or_env)
            gen = torch.Generator().manual_seed(seed)
            returns = np.asarray([
                self._env_episode(task_or_env, start, seed=seed * 100_003 + e, gen=gen, deterministic=False)[0]
                for e in range(episodes)
            ])
        else:
            raise TypeError(
                f"mean_return takes a workers.envs.Task or a gymnasium.Env, got {type(task_or_env).__name__}"
            )
        return float(returns.mean())

    # ---- the meta-test ----
    def adaptation_plan(self) -> IterationPlan:
        """The algorithm's registered meta-test plan (RL²'s: one evaluation phase, no inner step)."""
        return registry.get(self.algorithm).adaptation(self._spec.algorithm, 1)

    def meta_test(self, tasks: Sequence[Task], *, source: Any) -> Collected:
        """Run the meta-test plan on ``tasks`` with the phases from ``source`` (a
        :class:`TrialMetaTestSource`: per task one :class:`TrialMetaTest`) through the phase
        runner.  Every task's trial starts from zeros, whatever state this policy holds."""
        if not tasks:
            raise ValueError("meta_test needs at least one task")
        self._check_tasks(tasks)
        return collect(self.adaptation_plan(), tasks, source=source, learner=_TrialPort(self))

    # ---- internals ----
    def _zeros(self) -> TrialState:
        ps = self._policy_spec
        return TrialState.zeros(1, ps.hidden_size, ps.act_dim)

    def _checked_state(self, state: TrialState) -> TrialState:
        ps = self._policy_spec
        if state.state.shape[1:] != (ps.hidden_size,) or state.prev_action.shape[1:] != (ps.act_dim,):
            raise ValueError(
                f"a trial state of hidden size {state.state.shape[1:]} and action size {state.prev_action.shape[1:]} "
                f"does not fit the policy's ({ps.hidden_size},) and ({ps.act_dim},)"
            )
        return TrialState(*(np.array(a, np.float32) for a in
                            (state.state, state.prev_action, state.prev_reward, state.prev_done)))

    def _one_trial(self, what: str) -> TrialState:
        if self._state.num_trials != 1:
            raise ValueError(
                f"{what} goes on from one trial's state, but the policy holds {self._state.num_trials} (it acted on a "
                "batch): reset() it, or take one trial's with with_state(p.state.select([i]))"
            )
        return self._state

    def _derived(self, state: TrialState, *, episodes: int) -> RecurrentMetaPolicy:
        out = RecurrentMetaPolicy(
            spec=self._spec, policy_spec=self._policy_spec, params=self._params, algorithm=self.algorithm,
            iteration=self.iteration, source=self.source, training_run_id=self.training_run_id,
            clips_actions=self._clips, trial_state=state, adapted_episodes=self.adapted_episodes + episodes,
        )
        out._family, out._bounds = self._family, self._bounds
        return out

    def _step(self, obs: np.ndarray, start: TrialState, *, deterministic: bool, gen: torch.Generator,
              bounds: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, TrialState]:
        """One step of the trials ``start`` (``[N, obs_dim]`` observations): the actions as the
        policy chose them, and the state after the step whose previous action is the action as
        the env applies it (clipped to ``bounds`` where given; one-hot for a discrete one) and
        whose previous reward and done flag are 0 until :meth:`observe` says otherwise."""
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        with torch.inference_mode():
            dist, _, h = self._policy.step(self._params, t(obs), t(start.prev_action), t(start.prev_reward),
                                           t(start.prev_done), t(start.state))
            a = self._policy.mode(dist) if deterministic else self._policy.sample(dist, gen)
            applied = self._policy.encode_action(a).numpy().astype(np.float32)
        raw = a.numpy()
        if bounds is not None and not self._policy_spec.discrete:
            applied = np.minimum(np.maximum(applied, bounds[0]), bounds[1])
        n = len(obs)
        return raw, TrialState(h.numpy().copy(), applied, np.zeros(n, np.float32), np.zeros(n, np.float32))

    def _env_episode(self, env: gym.Env, start: TrialState, *, seed: int, gen: torch.Generator,
                     deterministic: bool) -> tuple[float, float, TrialState]:
        """One episode of a plain gymnasium env from the trial state ``start``: ``(return,
        success, state after its last step)`` (success 1 if ``info["success"]`` was at any step;
        a continuous action is clipped to a Box action space unless the env says it clips itself)."""
        space = env.action_space
        bounds = None
        if isinstance(space, gym.spaces.Box) and getattr(env.unwrapped, "clips_actions", True):
            bounds = (np.asarray(space.low, np.float32), np.asarray(space.high, np.float32))
        max_steps = env_rollout.horizon(env, self._spec.task_family.max_episode_steps)
        state = start
        obs, _ = env.reset(seed=seed)
        total, success = 0.0, 0.0
        for step in range(max_steps):
            raw, state = self._step(np.asarray(obs, np.float32)[None], state, deterministic=deterministic, gen=gen,
                                    bounds=bounds)
            env_a: Any = int(raw[0]) if self._policy_spec.discrete else state.prev_action[0].copy()
            obs, r, term, trunc, info = env.step(env_a)
            ended = bool(term or trunc) or step == max_steps - 1
            total += float(r)
            success = max(success, float(info.get("success", 0.0)))
            state = TrialState(state.state, state.prev_action, np.array([r], np.float32), np.array([ended], np.float32))
            if ended:
                break
        return total, success, state


# ---- the meta-test through the phase runner ------------------------------------------------------


@dataclass(frozen=True)
class TrialMetaTest:
    """One task's RL² meta-test.

    Attributes:
        adaptation: the adaptation trial: ``K`` episodes, actions sampled, from zeros.
        evaluation: the evaluation episodes, one-episode trials that each start from the state
            the adaptation trial left.
    """

    adaptation: Trials
    evaluation: Trials

    @property
    def adaptation_returns(self) -> np.ndarray:
        """Return of each episode of the adaptation trial, ``[K]``."""
        return self.adaptation.returns_per_episode()[0]

    @property
    def adaptation_success(self) -> np.ndarray:
        """Success (at any step) of each episode of the adaptation trial, ``[K]``."""
        return self.adaptation.success_per_episode()[0]

    @property
    def evaluation_returns(self) -> np.ndarray:
        """Return of each evaluation episode, ``[E]``."""
        return self.evaluation.returns_per_episode()[:, 0]

    @property
    def evaluation_success(self) -> np.ndarray:
        """Success (at any step) of each evaluation episode, ``[E]``."""
        return self.evaluation.success_per_episode()[:, 0]


@dataclass
class TrialMetaTestSource:
    """The evaluation phase of RL²'s meta-test plan as the phase runner's source: per task, a
    trial of ``adaptation_episodes`` episodes, then ``eval_episodes`` episodes from the state it
    left (deterministic with ``deterministic_eval``), by a
    :class:`~workers.trial_sampler.TrialPhaseSampler`.  Counts the env steps and seconds."""

    sampler: TrialPhaseSampler
    adaptation_episodes: int
    eval_episodes: int
    deterministic_eval: bool = False
    env_steps: int = 0
    seconds: float = 0.0

    @classmethod
    def evaluating(cls, sampler: TrialPhaseSampler, family: TaskFamily, *,
                   adaptation_episodes: int, sampled_actions: bool = False) -> TrialMetaTestSource:
        """``family``'s evaluation protocol: its ``eval_episodes`` (else ``adaptation_episodes``)
        evaluation episodes, deterministic where it says (Meta-World: 3, deterministic) unless
        ``sampled_actions``."""
        return cls(sampler, adaptation_episodes, family.eval_episodes or adaptation_episodes,
                   deterministic_eval=family.deterministic_eval and not sampled_actions)

    def sample(self, phase: Phase, tasks: Sequence[Task], params: Any) -> list[TrialMetaTest]:
        if not phase.evaluation:
            raise ValueError(f"a trial meta-test runs the plan's evaluation phase, not {phase.name!r}")
        if not isinstance(params, dict):
            raise TypeError("RL²'s meta-test acts with θ (one params dict), not per-task parameters")
        began = time.perf_counter()
        adaptation, evaluation = self.sampler.meta_test(
            tasks, params, adaptation_episodes=self.adaptation_episodes, eval_episodes=self.eval_episodes,
            deterministic_eval=self.deterministic_eval,
        )
        self.env_steps += self.sampler.last_stats.env_steps
        self.seconds += time.perf_counter() - began
        return [TrialMetaTest(a, e) for a, e in zip(adaptation, evaluation, strict=True)]


@dataclass
class _TrialPort:
    """A recurrent meta-policy as the phase runner's learner port at meta-test: θ, and no inner
    step (its plan asks for none)."""

    policy: RecurrentMetaPolicy

    def meta_params(self) -> Params:
        return self.policy._params

    def adapt(self, params: Any, data: Any, *, k: int) -> Any:
        raise TypeError("RL² adapts in its hidden state within a trial; its meta-test takes no inner step")

    def learn(self, phases: list[Any]) -> dict[str, float]:
        raise TypeError("a meta-test adapts; it does not learn")


def _check_steps(steps: int) -> None:
    if steps != 1:
        raise ValueError(
            f"steps={steps!r}: RL² adapts within a trial -- its hidden state over the trial's episodes "
            "(set them with episodes=K) -- and takes no inner steps; pass steps=1"
        )


__all__ = ["MAX_ENVS", "RecurrentMetaPolicy", "TrialMetaTest", "TrialMetaTestSource"]
