"""Collects RL² trials (Duan et al. 2016, sec. 2.2) of one or several tasks, the recurrent
policy batched over every env (no Ray here).

A :class:`TrialSampler` owns one vector env with ``trials_per_task`` sub-envs per task, grouped by
task (the same vector envs :class:`~workers.sampler.Sampler` uses, built by the family and
re-targeted with :func:`~workers.envs.base.set_vector_tasks`).  One ``sample`` call runs one trial
in every sub-env: the policy's hidden state starts at zeros, and the sub-env plays
``episodes_per_trial`` episodes back to back -- when an episode ends, only that sub-env is reset
(``reset(options={"reset_mask": ...})``, which every vector env of the package implements: the
lean vector env, the MuJoCo and Meta-World ones and navigation2d's) while its hidden state, its
previous action and reward carry over and its "previous step ended an episode" input is 1.  A
sub-env whose trial is over holds (the vector envs do not step it again) and is masked out.

Each env step runs the policy ONCE for all sub-envs.  As in :mod:`workers.sampler`, the per-step
action is computed with numpy (:class:`_NumpyGRUActor`: the encoder, ``nn.GRUCell``'s equations
and the action head as a few small matrix products over all sub-envs; the action noise drawn once
per call from the sampler's torch generator), because a torch op costs microseconds of dispatch
that would add up to more than the env's step.  The behaviour log-probabilities and values are
then computed by the torch policy itself over the whole trial (:meth:`RecurrentPolicy.unroll`
on the stored inputs), so they are exactly the policy's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch

from algorithms.policies import Params
from algorithms.rl2.policy import RecurrentPolicy, RecurrentPolicySpec, make_recurrent_policy
from algorithms.rl2.spec import RL2Spec
from algorithms.rl2.trials import Trials, TrialState
from workers.envs.base import Task, TaskFamily
from workers.sampler import SampleStats, TaskVectorEnvs, steps_until


class TrialSampler(TaskVectorEnvs):
    """Steps a vector env for a set of tasks and returns one :class:`Trials` per task.

    Args:
        family: the task family.
        policy_spec: the recurrent policy's architecture (its parameters come with every call).
        trials_per_task: sub-envs per task, each running one trial per call.
        seed: base seed of the env resets and the action noise.
        keep_states: store the hidden state entering every step in ``Trials.states`` (costs
            ``T x B x hidden`` floats per task; for diagnostics and tests).
    """

    def __init__(self, family: TaskFamily, policy_spec: RecurrentPolicySpec, *, trials_per_task: int, seed: int,
                 keep_states: bool = False) -> None:
        dims = family.policy_dims()
        if (policy_spec.obs_dim, policy_spec.act_dim, policy_spec.discrete) != dims:
            raise ValueError(
                f"the policy spec has (obs_dim, act_dim, discrete) = "
                f"{(policy_spec.obs_dim, policy_spec.act_dim, policy_spec.discrete)}, family {family.name!r} has {dims}"
            )
        if trials_per_task < 1:
            raise ValueError(f"trials_per_task must be >= 1, got {trials_per_task}")
        super().__init__(family, envs_per_task=trials_per_task, seed=seed, discrete=policy_spec.discrete)
        self.policy: RecurrentPolicy = make_recurrent_policy(policy_spec)
        self.policy.requires_grad_(False)
        self.keep_states = keep_states

    @property
    def trials_per_task(self) -> int:
        """Trials per task and call: one per sub-env."""
        return self.envs_per_task

    def sample(self, tasks: Sequence[Task], params: Params, *, episodes_per_trial: int,
               deterministic: bool = False, start: TrialState | None = None) -> list[Trials]:
        """One trial of ``episodes_per_trial`` episodes in each of the ``trials_per_task`` sub-envs
        of every task, acting with ``params`` (θ, shared by every task); one :class:`Trials` per
        task, each with its ``end`` (where its trials stood after their last step).

        Args:
            deterministic: the policy's mode instead of samples.
            start: where each trial starts (``tasks x trials_per_task`` rows, grouped by task):
                the hidden state and the first step's "previous step" inputs; zeros (a new
                trial) when omitted.  RL²'s meta-test starts each evaluation episode from the
                state its adaptation episodes left.
        """
        if not tasks:
            raise ValueError("sample needs at least one task")
        if episodes_per_trial < 1:
            raise ValueError(f"episodes_per_trial must be >= 1, got {episodes_per_trial}")
        if not isinstance(params, dict):
            raise TypeError("TrialSampler.sample takes one params dict (θ), shared by every task")
        began = time.perf_counter()
        theta = {k: v.detach().to("cpu", torch.float32) for k, v in params.items()}
        n, k = len(tasks), self.trials_per_task
        spec = self.policy.spec
        if start is None:
            start = TrialState.zeros(n * k, spec.hidden_size, spec.act_dim)
        elif start.num_trials != n * k or start.state.shape[1] != spec.hidden_size or \
                start.prev_action.shape[1] != spec.act_dim:
            raise ValueError(
                f"start has {start.num_trials} trials of state {start.state.shape[1]} and action "
                f"{start.prev_action.shape[1]}; this call runs {n} tasks x {k} trials of a policy with state "
                f"{spec.hidden_size}, action {spec.act_dim}"
            )
        vec = self._vector_env(tasks)
        data, end = self._run(vec, theta, episodes_per_trial, deterministic, start)
        out = []
        for i in range(n):
            cols = slice(i * k, (i + 1) * k)
            steps = int(data["mask"][:, cols].sum(axis=0).max())
            part = {name: np.ascontiguousarray(a[:steps, cols]) for name, a in data.items() if name != "initial_state"}
            states = part.pop("states", None)
            out.append(Trials(**part, initial_state=data["initial_state"][cols].copy(),
                              has_success=self.family.has_success, states=states, end=end.select(cols)))
        self.last_stats = SampleStats(env_steps=int(data["mask"].sum()), seconds=time.perf_counter() - began)
        return out

    def _run(self, vec: gym.vector.VectorEnv, theta: Params, episodes: int, deterministic: bool,
             start: TrialState) -> tuple[dict[str, np.ndarray], TrialState]:
        """Every sub-env's trial, as ``[T, num_envs, ...]`` arrays (padding zeroed, ``T`` the
        longest trial's steps), and where each trial stood after its last step."""
        spec = self.policy.spec
        horizon = self.family.max_episode_steps
        limit = episodes * horizon  # no trial is longer
        num = vec.num_envs
        od, ad = spec.obs_dim, spec.act_dim
        if self._seeded:
            obs, _ = vec.reset()
        else:
            # one seed per sub-env (gymnasium's vector envs take a list; its stub says int)
            obs, _ = vec.reset(seed=[self.seed * 100_003 + i for i in range(num)])  # type: ignore[arg-type]
            self._seeded = True
        actor = _NumpyGRUActor(self.policy, theta, num)
        actor.h[...] = start.state
        noise = None if deterministic else actor.noise(limit, self._gen)
        # the policy's inputs [obs, previous action, previous reward, previous done] of every step,
        # one row more: a step writes the "previous" parts of the next one
        inp = np.zeros((limit + 1, num, spec.input_dim), np.float32)
        inp[0, :, od : od + ad] = start.prev_action
        inp[0, :, od + ad] = start.prev_reward
        inp[0, :, od + ad + 1] = start.prev_done
        end_inputs = np.zeros((num, ad + 2), np.float32)  # the inputs after each trial's last step
        last_step = np.zeros(num, np.int64)
        acts = np.zeros((limit, num), np.int64) if self._discrete else np.zeros((limit, num, ad), np.float32)
        rewards = np.zeros((limit, num), np.float32)
        dones = np.zeros((limit, num), bool)
        trial_end = np.zeros((limit, num), bool)
        success = np.zeros((limit, num), np.float32)
        states = np.zeros((limit, num, spec.hidden_size), np.float32) if self.keep_states else None
        ended_episodes = np.zeros(num, np.int64)
        episode_steps = np.zeros(num, np.int64)
        active = np.ones(num, bool)
        rows = np.arange(num)
        low, high = self._low, self._high
        steps = limit
        for t in range(limit):
            x, nxt = inp[t], inp[t + 1]
            x[:, :od] = obs
            if states is not None:
                states[t] = actor.h
            a = acts[t]
            actor.act(x, None if noise is None else noise[t], a)
            if self._discrete:
                nxt[rows, od + a] = 1.0  # one-hot previous action
                env_a = a
            else:
                env_a = a if low is None or high is None else np.minimum(np.maximum(a, low), high)
                nxt[:, od : od + ad] = env_a
            obs, r, term, trunc, info = vec.step(env_a)
            rewards[t] = r
            nxt[:, od + ad] = rewards[t]
            if "success" in info:
                present = info.get("_success")
                success[t] = info["success"] if present is None else np.where(present, info["success"], 0.0)
            episode_steps += 1
            ended = term | trunc
            ended |= episode_steps >= horizon
            d = dones[t]
            np.logical_and(ended, active, out=d)
            nxt[:, od + ad + 1] = d
            if d.any():
                ended_episodes += d
                done_trial = d & (ended_episodes >= episodes)
                trial_end[t] = done_trial
                end_inputs[done_trial] = nxt[done_trial, od:]
                last_step[done_trial] = t
                active &= ~done_trial
                again = d & ~done_trial
                if not active.any():
                    steps = t + 1
                    break
                if again.any():
                    # only these sub-envs start their next episode (the others keep stepping)
                    obs, _ = vec.reset(options={"reset_mask": again})
                    episode_steps[again] = 0
        data, all_states = self._finish(inp[:steps], acts[:steps], rewards[:steps], dones[:steps],
                                        trial_end[:steps], success[:steps], None if states is None else states[:steps],
                                        theta, start.state)
        # the torch policy's state after each trial's last step
        end = TrialState(state=np.ascontiguousarray(all_states[last_step + 1, np.arange(num)]),
                         prev_action=end_inputs[:, :ad].copy(), prev_reward=end_inputs[:, ad].copy(),
                         prev_done=end_inputs[:, ad + 1].copy())
        return data, end

    def _finish(self, inp: np.ndarray, acts: np.ndarray, rewards: np.ndarray, dones: np.ndarray,
                trial_end: np.ndarray, success: np.ndarray, states: np.ndarray | None,
                theta: Params, state0: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Mask what follows each trial's end, then the behaviour log-probabilities and values:
        the torch policy's ``unroll`` over the stored inputs from ``state0``; also returns its
        states ``[T + 1, num, hidden]``."""
        spec = self.policy.spec
        od, ad = spec.obs_dim, spec.act_dim
        mask = steps_until(trial_end)
        off = ~mask
        inp[off] = 0.0
        acts[off] = 0
        rewards[off] = 0.0
        success[off] = 0.0
        episode_index = np.cumsum(dones, axis=0) - dones
        episode_index[off] = -1
        if states is not None:
            states[off] = 0.0
        obs, prev_actions = inp[..., :od], inp[..., od : od + ad]
        prev_rewards, prev_dones = inp[..., od + ad], inp[..., od + ad + 1]
        state0 = np.ascontiguousarray(state0, dtype=np.float32)
        with torch.inference_mode():
            dist, values, torch_states = self.policy.unroll(
                theta, torch.from_numpy(obs), torch.from_numpy(prev_actions), torch.from_numpy(prev_rewards),
                torch.from_numpy(prev_dones), torch.from_numpy(state0),
            )
            log_probs = self.policy.log_prob(dist, torch.from_numpy(acts)).numpy()
            values_np = values.numpy()
        out = {
            "obs": obs, "actions": acts, "prev_actions": prev_actions, "prev_rewards": prev_rewards,
            "prev_dones": prev_dones, "rewards": rewards, "dones": dones, "trial_end": trial_end,
            "mask": mask.astype(np.float32), "log_probs": np.where(mask, log_probs, 0.0).astype(np.float32),
            "values": np.where(mask, values_np, 0.0).astype(np.float32), "success": success,
            "episode_index": episode_index.astype(np.int64), "initial_state": state0,
        }
        if states is not None:
            out["states"] = states
        return out, torch_states.numpy()


class TrialPhaseSampler:
    """RL²'s data for the engine's phases (what :func:`workers.sampling.make_sampler` builds for
    an RL² job): ``sample(tasks, params, episodes_per_task=n)`` returns, per task, ``n /
    episodes_per_trial`` trials of ``episodes_per_trial`` episodes, run on up to
    ``envs_per_task`` sub-envs per task at once (more trials than that are run in rounds and
    joined).

    The meta-test (``deterministic`` or not, the plan's evaluation phase) is :meth:`meta_test`.
    """

    def __init__(self, family: TaskFamily, policy_spec: RecurrentPolicySpec, *, episodes_per_trial: int,
                 envs_per_task: int, seed: int) -> None:
        if episodes_per_trial < 1 or envs_per_task < 1:
            raise ValueError(
                f"episodes_per_trial and envs_per_task must be >= 1, got {episodes_per_trial}, {envs_per_task}"
            )
        self.family, self.policy_spec = family, policy_spec
        self.episodes_per_trial, self.envs_per_task, self.seed = episodes_per_trial, envs_per_task, seed
        self._samplers: dict[int, TrialSampler] = {}
        self.last_stats = SampleStats(env_steps=0, seconds=0.0)

    def _sampler(self, trials: int) -> TrialSampler:
        if trials not in self._samplers:
            self._samplers[trials] = TrialSampler(self.family, self.policy_spec, trials_per_task=trials,
                                                  seed=self.seed + 7919 * trials)
        return self._samplers[trials]

    def trials(self, tasks: Sequence[Task], params: Params, *, trials_per_task: int, episodes_per_trial: int,
               deterministic: bool = False, start: TrialState | None = None) -> list[Trials]:
        """``trials_per_task`` trials of every task (rounds of at most ``envs_per_task``), from
        ``start`` (``tasks x trials_per_task`` rows) or from zeros; one :class:`Trials` per task."""
        began = time.perf_counter()
        steps = 0
        parts: list[list[Trials]] = [[] for _ in tasks]
        done = 0
        while done < trials_per_task:
            k = min(self.envs_per_task, trials_per_task - done)
            rows = None if start is None else np.concatenate(
                [np.arange(i * trials_per_task + done, i * trials_per_task + done + k) for i in range(len(tasks))])
            sampler = self._sampler(k)
            out = sampler.sample(tasks, params, episodes_per_trial=episodes_per_trial, deterministic=deterministic,
                                 start=None if start is None or rows is None else start.select(rows))
            steps += sampler.last_stats.env_steps
            for i, t in enumerate(out):
                parts[i].append(t)
            done += k
        self.last_stats = SampleStats(env_steps=steps, seconds=time.perf_counter() - began)
        return [p[0] if len(p) == 1 else Trials.concatenate(p) for p in parts]

    def sample(self, tasks: Sequence[Task], params: Params, *, episodes_per_task: int,
               deterministic: bool = False) -> list[Trials]:
        """A training phase: ``episodes_per_task / episodes_per_trial`` trials of every task."""
        if episodes_per_task % self.episodes_per_trial:
            raise ValueError(f"episodes_per_task={episodes_per_task} is not a multiple of episodes_per_trial="
                             f"{self.episodes_per_trial}")
        return self.trials(tasks, params, trials_per_task=episodes_per_task // self.episodes_per_trial,
                           episodes_per_trial=self.episodes_per_trial, deterministic=deterministic)

    def meta_test(self, tasks: Sequence[Task], params: Params, *, adaptation_episodes: int, eval_episodes: int,
                  deterministic_eval: bool) -> tuple[list[Trials], list[Trials]]:
        """RL²'s meta-test on each task: one trial of ``adaptation_episodes`` episodes (actions
        sampled: the policy explores), then ``eval_episodes`` evaluation episodes that each start
        from the state the adaptation episodes left (its hidden state and its last step's
        inputs); ``deterministic_eval``: the evaluation episodes take the policy's mode.

        Returns ``(adaptation, evaluation)``: per task, one trial of the adaptation episodes, and
        ``eval_episodes`` one-episode trials.
        """
        adaptation = self.trials(tasks, params, trials_per_task=1, episodes_per_trial=adaptation_episodes)
        steps = self.last_stats.env_steps
        began = time.perf_counter()
        start = TrialState.concatenate([t.end for t in adaptation if t.end is not None]).repeat(eval_episodes)
        evaluation = self.trials(tasks, params, trials_per_task=eval_episodes, episodes_per_trial=1,
                                 deterministic=deterministic_eval, start=start)
        self.last_stats = SampleStats(env_steps=steps + self.last_stats.env_steps,
                                      seconds=self.last_stats.seconds + time.perf_counter() - began)
        return adaptation, evaluation

    def close(self) -> None:
        for s in self._samplers.values():
            s.close()
        self._samplers.clear()


def make_trial_sampler(family: TaskFamily, policy_spec: RecurrentPolicySpec, spec: RL2Spec, *, envs_per_task: int,
                       seed: int) -> TrialPhaseSampler:
    """RL²'s sampler factory (its registration names it): trials of ``spec.episodes_per_trial``."""
    return TrialPhaseSampler(family, policy_spec, episodes_per_trial=spec.episodes_per_trial,
                             envs_per_task=envs_per_task, seed=seed)


class _NumpyGRUActor:
    """The per-step actions of a :class:`RecurrentPolicy`, computed with numpy for all sub-envs.

    Mirrors the policy's step: the encoder (``act(x @ W.T + b)`` per layer), ``nn.GRUCell``

        r = σ(W_ir e + b_ir + W_hr h + b_hr),  z = σ(W_iz e + b_iz + W_hz h + b_hz)
        n = tanh(W_in e + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 - z) ⊙ n + z ⊙ h

    (σ(x) = (1 + tanh(x / 2)) / 2, with the halving folded into the gates' weights -- exact, a power
    of two) and the action head; Gaussian actions are ``mean + exp(log_std) * noise``, categorical
    ones ``argmax(logits + Gumbel noise)`` (the same distribution as sampling the softmax).  It
    keeps the hidden state ``h`` of every sub-env between steps.
    """

    def __init__(self, policy: RecurrentPolicy, params: Params, num: int) -> None:
        spec = policy.spec
        self.num, self.discrete, self.tanh = num, spec.discrete, spec.activation == "tanh"
        hid = spec.hidden_size

        def arr(name: str) -> np.ndarray:
            return params[name].detach().to(torch.float32).numpy()

        self.enc_w = [np.ascontiguousarray(arr(f"encoder.{i}.weight").T) for i in range(len(policy.encoder))]
        self.enc_b = [arr(f"encoder.{i}.bias").copy() for i in range(len(policy.encoder))]
        half = np.ones(3 * hid, np.float32)
        half[: 2 * hid] = 0.5  # the reset and update gates' pre-activations, halved
        self.w_ih = np.ascontiguousarray(arr("gru.weight_ih").T * half)
        self.b_ih = arr("gru.bias_ih") * half
        self.w_hh = np.ascontiguousarray(arr("gru.weight_hh").T * half)
        self.b_hh = arr("gru.bias_hh") * half
        self.w_head = np.ascontiguousarray(arr("head.weight").T)
        self.b_head = arr("head.bias").copy()
        self.out_dim = spec.act_dim
        self.std = None if spec.discrete else np.exp(arr("log_std"))
        self.h = np.zeros((num, hid), np.float32)
        self._enc = [np.zeros((num, w.shape[1]), np.float32) for w in self.enc_w]
        self._gi = np.zeros((num, 3 * hid), np.float32)
        self._gh = np.zeros((num, 3 * hid), np.float32)
        self._rz = np.zeros((num, 2 * hid), np.float32)
        self._n = np.zeros((num, hid), np.float32)
        self._dist = np.zeros((num, spec.act_dim), np.float32)

    def noise(self, steps: int, gen: torch.Generator) -> np.ndarray:
        """The call's noise from the sampler's generator: scaled Gaussian noise
        ``[steps, num, act_dim]`` or Gumbel noise ``[steps, num, n_actions]``."""
        shape = (steps, self.num, self.out_dim)
        if self.discrete:
            return (-torch.empty(shape).exponential_(generator=gen).log()).numpy()
        assert self.std is not None
        return torch.randn(shape, generator=gen).numpy() * self.std

    def act(self, x: np.ndarray, noise: np.ndarray | None, out: np.ndarray) -> None:
        """Advance the hidden state on the inputs ``x`` ``[num, input_dim]`` and write the actions
        into ``out`` (the mode without noise)."""
        e = x
        for w, b, buf in zip(self.enc_w, self.enc_b, self._enc, strict=True):
            np.matmul(e, w, out=buf)
            np.add(buf, b, out=buf)
            if self.tanh:
                np.tanh(buf, out=buf)
            else:
                np.maximum(buf, 0.0, out=buf)
            e = buf
        hid = self.h.shape[1]
        gi, gh, rz, n, h = self._gi, self._gh, self._rz, self._n, self.h
        np.matmul(e, self.w_ih, out=gi)
        np.add(gi, self.b_ih, out=gi)
        np.matmul(h, self.w_hh, out=gh)
        np.add(gh, self.b_hh, out=gh)
        np.add(gi[:, : 2 * hid], gh[:, : 2 * hid], out=rz)
        np.tanh(rz, out=rz)
        np.multiply(rz, 0.5, out=rz)
        np.add(rz, 0.5, out=rz)  # [r, z]
        np.multiply(rz[:, :hid], gh[:, 2 * hid :], out=n)
        np.add(n, gi[:, 2 * hid :], out=n)
        np.tanh(n, out=n)
        np.subtract(h, n, out=h)
        np.multiply(h, rz[:, hid:], out=h)
        np.add(h, n, out=h)  # h' = n + z (h - n)
        d = self._dist
        np.matmul(h, self.w_head, out=d)
        np.add(d, self.b_head, out=d)
        if self.discrete:
            out[...] = (d if noise is None else d + noise).argmax(-1)
        elif noise is None:
            out[...] = d
        else:
            np.add(d, noise, out=out)


__all__ = ["TrialPhaseSampler", "TrialSampler", "make_trial_sampler"]
