"""MLflow access helpers against a real store in the test's temp dir."""

from __future__ import annotations

from mlflow.entities import Metric

from workers import tracking


def test_metric_history_keeps_the_latest_value_per_step(mlflow_store):
    """A resumed job logs the iterations after its last checkpoint again: the history has one
    point per step, the one logged last."""
    c = tracking.client()
    run_id = c.create_run(tracking.ensure_experiment()).info.run_id
    c.log_batch(run_id, metrics=[Metric("meta/return_post", v, t, s) for s, v, t in
                                 [(0, -50.0, 1000), (1, -40.0, 2000), (2, -30.0, 3000), (2, -35.0, 4000),
                                  (1, -20.0, 500)]])
    assert tracking.metric_history(run_id, "meta/return_post") == [(0, -50.0), (1, -40.0), (2, -35.0)]
    assert tracking.metric_history(run_id, "missing") == []


def test_checkpoints_by_iteration(mlflow_store):
    """Every checkpoint a run logged stays loadable by its iteration, beside the latest."""
    import torch

    from algorithms.base import LearnerState
    from algorithms.maml import MAML, MAMLSpec
    from algorithms.policies import PolicySpec

    run = tracking.Tracker.start(run_name="ckpts", job_id="ckpts", params={})
    c, run_id = tracking.client(), run.run_id
    assert tracking.checkpoint_iterations(run_id) == [] and tracking.load_checkpoint(run_id) is None
    learner = MAML(PolicySpec(obs_dim=2, act_dim=2, hidden_sizes=(4,)), MAMLSpec(), seed=0)
    saved = {}
    for it in (10, 20, 30):
        with torch.no_grad():
            learner.policy.log_std.fill_(-it / 100)
        learner.iteration = it
        state: LearnerState = learner.state_dict()
        run.log_checkpoint(state)
        saved[it] = {k: v.clone() for k, v in state.params.items()}
    c.log_text(run_id, "not a checkpoint", f"{tracking.CHECKPOINT_DIR}/notes.txt")
    assert tracking.checkpoint_iterations(run_id) == [10, 20, 30]
    assert tracking.load_checkpoint(run_id).iteration == 30  # the latest
    middle = tracking.load_checkpoint(run_id, 20)
    assert middle.iteration == 20
    assert all(torch.equal(middle.params[k], saved[20][k]) for k in saved[20])
    assert not torch.equal(middle.params["log_std"], saved[30]["log_std"])
    assert tracking.load_checkpoint(run_id, 25) is None
