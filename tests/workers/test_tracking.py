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
                                 [(0, -50.0, 1000), (1, -40.0, 2000), (2, -30.0, 3000), (2, -35.0, 4000), (1, -20.0, 500)]])
    assert tracking.metric_history(run_id, "meta/return_post") == [(0, -50.0), (1, -40.0), (2, -35.0)]
    assert tracking.metric_history(run_id, "missing") == []
