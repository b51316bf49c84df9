"""The supervised few-shot model: really trained supervised learners (MAML on sinusoid
regression, ProtoNets on digits-rotations classification, Meta-SGD on sinusoid) logged to a real
MLflow store (SQLite + a local artifact dir in the test's temp dir), loaded back, adapted on a
support set in three lines and checked against the learner's own ``adapt_task`` + ``predict``;
the pyfunc model, saving, and the few-shot meta-test evaluation; no Ray."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from algorithms import registry
from algorithms.supervised.learner import SupervisedLearner
from tests.workers.model_store import fresh_store
from workers.contract import EVALUATION_REPORT, JobSpec
from workers.distributions import build_distribution
from workers.evaluate import (
    EXPERIMENT,
    SUPERVISED_FIELDS,
    EpisodeResult,
    EvaluationReport,
    Interval,
    TaskResult,
    evaluate,
    main,
)
from workers.loop import train_in_process
from workers.model import (
    MetaPolicy,
    RegisteredModel,
    SupervisedMetaModel,
    SupervisedMetaPolicyModel,
    log_meta_policy,
)
from workers.supervised import SupervisedTaskDistribution, SupportQuery
from workers.tasks import Task, TaskFamilyError

MAML_STEPS = 3  # sl-maml's test_inner_steps in these jobs


@dataclass(frozen=True)
class Trained:
    """A learner trained in process, with its spec, distribution and last metrics."""

    spec: JobSpec
    learner: SupervisedLearner
    dist: SupervisedTaskDistribution
    metrics: dict[str, float]


def _train(spec: JobSpec) -> Trained:
    tf = spec.task_family
    dist = build_distribution(tf.name, seed=spec.seed, **tf.family_kwargs())
    assert isinstance(dist, SupervisedTaskDistribution)
    learner = registry.make_learner(spec.algorithm, spec.model_spec(dist), seed=spec.seed)
    results = train_in_process(learner, dist, meta_batch_size=spec.meta_batch_size, episodes_per_task=1,
                               iterations=spec.iterations, seed=spec.seed)
    return Trained(spec=spec, learner=learner, dist=dist, metrics=results[-1].metrics)


def _spec(name: str, algorithm: dict, family: dict, **over) -> JobSpec:
    base = {"name": name, "algorithm": algorithm, "task_family": family, "policy": {"hidden_sizes": [16, 16]},
            "meta_batch_size": 4, "iterations": 3, "seed": 1}
    base.update(over)
    return JobSpec.model_validate(base)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh SQLite tracking store with a local artifact root, for this module."""
    with fresh_store(tmp_path_factory.mktemp("mlflow"), "metarl-supervised-model-tests") as s:
        yield s


@pytest.fixture(scope="module")
def maml() -> Trained:
    """MAML on sinusoid regression (5 shots, 10 queries), meta-batch 4, 3 iterations."""
    torch.manual_seed(0)
    return _train(_spec("sine-maml", {"name": "sl-maml", "inner_lr": 0.01, "test_inner_steps": MAML_STEPS},
                        {"name": "sinusoid", "params": {"shots": 5, "queries": 10}}))


@pytest.fixture(scope="module")
def proto() -> Trained:
    """ProtoNets on 3-way 1-shot digits-rotations (conv4), meta-batch 4, 3 iterations."""
    torch.manual_seed(0)
    return _train(_spec("digits-proto", {"name": "protonet"},
                        {"name": "digits-rotations", "params": {"ways": 3, "shots": 1, "queries": 4}}))


@pytest.fixture(scope="module")
def registered(store, maml, proto) -> dict[str, RegisteredModel]:
    out = {}
    for key, t in (("maml", maml), ("proto", proto)):
        with mlflow.start_run(experiment_id=store.experiment_id):
            out[key] = log_meta_policy(state=t.learner.state_dict(), spec=t.spec, final_metrics=t.metrics,
                                       register_as=t.spec.name, family=t.dist)
    return out


@pytest.fixture(params=["maml", "proto"])
def kind(request) -> str:
    return request.param


def _trained(kind: str, maml: Trained, proto: Trained) -> Trained:
    return {"maml": maml, "proto": proto}[kind]


def _episode(t: Trained, seed: int = 0) -> SupportQuery:
    rng = np.random.default_rng(seed)
    return t.dist.episode(t.dist.sample_tasks(1, rng, split="test")[0], rng)


def _reference(t: Trained, episode: SupportQuery, *, steps: int | None = None) -> np.ndarray:
    """The learner's own adaptation and outputs on ``episode``'s queries."""
    adapted = t.learner.adapt_task(t.learner.params, episode, steps=steps)
    return t.learner.predict(adapted, torch.as_tensor(episode.x_query)).numpy()


# ---- loading --------------------------------------------------------------------------------------


def test_a_supervised_model_loads_as_the_supervised_kind(store, maml, proto, registered):
    client = mlflow.MlflowClient(store.uri)
    for key, t, problem in (("maml", maml, "regression"), ("proto", proto, "classification")):
        reg = registered[key]
        assert reg.uri == f"models:/{t.spec.name}/1"
        m = MetaPolicy.load(reg.uri)
        assert isinstance(m, SupervisedMetaModel) and type(m) is SupervisedMetaModel
        assert m.algorithm == t.spec.algorithm.name and m.iteration == 3 and m.spec == t.spec
        assert m.policy_spec == t.learner.net_spec and m.input_shape == t.dist.input_shape
        assert m.output_dim == t.dist.output_dim and m.problem == problem and not m.adapted
        assert m.training_run_id == reg.run_id and m.action_bounds is None
        state = t.learner.state_dict()
        assert set(m.params) == set(state.params)
        for k, v in state.params.items():
            torch.testing.assert_close(m.params[k], v, rtol=0, atol=0)
        card = json.loads((Path(mlflow.artifacts.download_artifacts(f"runs:/{reg.run_id}/meta_policy"))
                           / "artifacts" / "policy.json").read_text())
        assert card["policy_kind"] == "supervised" and card["format_version"] == 1 and card["problem"] == problem
        assert card["adapted"] is False and card["config"]["name"] == t.spec.algorithm.name
        assert "action_bounds" not in card and "inner_lr" not in card
        tags = client.get_model_version(t.spec.name, "1").tags
        assert tags["algorithm"] == t.spec.algorithm.name and tags["task_family"] == t.spec.task_family.name
        assert not any(k.startswith(("return", "success")) for k in tags)
    maml_tags = client.get_model_version("sine-maml", "1").tags
    assert float(maml_tags["mse"]) == pytest.approx(maml.metrics["meta/mse"])
    assert float(maml_tags["mse_pre"]) == pytest.approx(maml.metrics["meta/mse_pre"])
    proto_tags = client.get_model_version("digits-proto", "1").tags
    assert float(proto_tags["accuracy"]) == pytest.approx(proto.metrics["meta/accuracy"])
    assert "accuracy_pre" not in proto_tags  # ProtoNets report no pre-adaptation figure
    assert MetaPolicy.load(registered["maml"].uri).default_steps == MAML_STEPS
    assert MetaPolicy.load(registered["proto"].uri).default_steps is None


def test_initial_is_the_learners_starting_point(maml):
    initial = MetaPolicy.initial(maml.spec)
    assert isinstance(initial, SupervisedMetaModel) and initial.iteration == 0 and not initial.adapted
    fresh = registry.make_learner(maml.spec.algorithm, maml.learner.net_spec, seed=maml.spec.seed)
    for k, v in fresh.params.items():
        torch.testing.assert_close(initial.params[k], v, rtol=0, atol=0)
    assert any(not torch.equal(initial.params[k], v) for k, v in maml.learner.params.items())
    assert isinstance(initial.family, SupervisedTaskDistribution) and initial.family.name == "sinusoid"
    held = MetaPolicy.from_learner_state(maml.spec, maml.learner.state_dict(), source="test")
    assert isinstance(held, SupervisedMetaModel) and held.source == "test" and held.iteration == 3


# ---- adapting and predicting ------------------------------------------------------------------------


def test_adapt_and_predict_in_three_lines_as_the_learner_does(registered, maml, proto, kind):
    t = _trained(kind, maml, proto)
    episode = _episode(t, seed=3)

    m = MetaPolicy.load(registered[kind].uri)
    a = m.adapt(episode.x_support, episode.y_support)
    predictions = a.predict(episode.x_query)

    reference = _reference(t, episode)
    assert isinstance(a, SupervisedMetaModel) and a.adapted and not m.adapted
    np.testing.assert_array_equal(a.outputs(episode.x_query), reference)
    if kind == "proto":
        assert predictions.dtype == np.int64 and predictions.shape == (len(episode.y_query),)
        np.testing.assert_array_equal(predictions, reference.argmax(-1))
        proba = a.predict_proba(episode.x_query)
        assert proba.shape == (len(episode.y_query), 3) and proba.dtype == np.float32
        np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(proba.argmax(-1), predictions)
        assert a.adapted_steps == 0 and {"head.weight", "head.bias"} <= set(a.params)  # the prototypes
        assert not {"head.weight", "head.bias"} & set(m.params)
    else:
        assert predictions.dtype == np.float32 and predictions.shape == episode.y_query.shape
        np.testing.assert_array_equal(predictions, reference)
        assert a.adapted_steps == MAML_STEPS
        # more (or fewer) inner steps: the learner's with as many
        np.testing.assert_array_equal(m.adapt(episode.x_support, episode.y_support, steps=1).predict(episode.x_query),
                                      _reference(t, episode, steps=1))
        # θ itself predicts (the pre-adaptation figure), differently from the adapted model
        np.testing.assert_array_equal(m.predict(episode.x_query),
                                      t.learner.predict(t.learner.params, torch.as_tensor(episode.x_query)).numpy())
        assert not np.array_equal(m.predict(episode.x_query), predictions)
        with pytest.raises(TypeError, match="predict_proba is for classifiers"):
            a.predict_proba(episode.x_query)
    # the original is unchanged
    for k, v in t.learner.state_dict().params.items():
        torch.testing.assert_close(m.params[k], v, rtol=0, atol=0)
    # any numeric dtype of the same values: the same predictions
    again = m.adapt(episode.x_support.astype(np.float64), episode.y_support.astype(
        np.int32 if kind == "proto" else np.float64))
    np.testing.assert_array_equal(again.predict(episode.x_query.astype(np.float64)), predictions)


def test_adapt_on_a_task_or_an_episode(registered, maml, proto, kind):
    t = _trained(kind, maml, proto)
    m = MetaPolicy.load(registered[kind].uri)
    task = m.family.sample_tasks(1, np.random.default_rng(5), split="test")[0]
    episode = m.episode(task, seed=2)
    from_task = m.adapt(task, seed=2)
    np.testing.assert_array_equal(from_task.outputs(episode.x_query), _reference(t, episode))
    np.testing.assert_array_equal(m.adapt(episode).outputs(episode.x_query), _reference(t, episode))
    # an adapted model adapts on from what it adapted to, and records the steps
    if kind == "maml":
        assert from_task.adapt(episode, steps=2).adapted_steps == MAML_STEPS + 2


def test_bad_inputs_raise_clear_errors(registered, maml, proto):
    sine = MetaPolicy.load(registered["maml"].uri)
    digits = MetaPolicy.load(registered["proto"].uri)
    e, d = _episode(maml), _episode(proto)
    # shapes and dtypes of the support set
    with pytest.raises(ValueError, match=r"support_x must have shape \[N, 1\].*got \[5\]"):
        sine.adapt(e.x_support[:, 0], e.y_support)
    with pytest.raises(ValueError, match=r"support_y must have shape \[5, 1\].*reshape"):
        sine.adapt(e.x_support, e.y_support[:, 0])
    with pytest.raises(ValueError, match=r"support_x must have shape \[N, 1, 8, 8\].*got \[3, 8, 8\]"):
        digits.adapt(d.x_support[:, 0], d.y_support)
    with pytest.raises(ValueError, match="integer class indices 0..2"):
        digits.adapt(d.x_support, d.y_support.astype(np.float32))
    with pytest.raises(ValueError, match=r"class indices must be in 0..2.*got 0..3"):
        digits.adapt(d.x_support, np.array([0, 1, 3]))
    with pytest.raises(ValueError, match=r"support_y must have shape \[3\]"):
        digits.adapt(d.x_support, np.array([0, 1]))
    with pytest.raises(ValueError, match="needs a support example"):  # ProtoNets: every class a prototype
        digits.adapt(d.x_support, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="must be numbers"):
        sine.adapt(np.array([["a"]]), e.y_support[:1])
    with pytest.raises(ValueError, match="finite"):
        sine.adapt(np.full((2, 1), np.nan), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="finite"):
        sine.adapt(e.x_support, np.full_like(e.y_support, np.inf))
    with pytest.raises(ValueError, match="empty"):
        sine.adapt(e.x_support[:0], e.y_support[:0])
    with pytest.raises(TypeError, match="support_y.*is missing"):
        sine.adapt(e.x_support)
    # steps
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        sine.adapt(e.x_support, e.y_support, steps=0)
    with pytest.raises(ValueError, match="protonet takes no inner steps"):
        digits.adapt(d.x_support, d.y_support, steps=2)
    # queries
    adapted = digits.adapt(d.x_support, d.y_support)
    with pytest.raises(ValueError, match=r"query_x must have shape \[N, 1, 8, 8\].*query_x\[None\]"):
        adapted.predict(d.x_query[0])
    with pytest.raises(ValueError, match="adapt the model first"):
        digits.predict(d.x_query)
    # RL notions and other things to adapt on
    with pytest.raises(TypeError, match="no actions"):
        sine.act(np.zeros(1))
    with pytest.raises(TypeError, match="no episodes or returns"):
        sine.mean_return(Task("sinusoid", "test", 0, {"amplitude": 1.0, "phase": 0.0}))
    with pytest.raises(TypeError, match="not on a gymnasium env"):
        sine.adapt(gym.make("CartPole-v1"))
    with pytest.raises(TypeError, match="a task or an episode alone"):
        sine.adapt(e, e.y_support)
    with pytest.raises(TaskFamilyError, match="trained on 'sinusoid' tasks"):
        sine.adapt(Task("digits-rotations", "test", 0, {"classes": "0,1,2"}))


# ---- the pyfunc model and saving ----------------------------------------------------------------------


def test_pyfunc_predict_equals_the_model(registered, maml, proto, kind):
    t = _trained(kind, maml, proto)
    model = mlflow.pyfunc.load_model(registered[kind].uri)
    assert isinstance(model.unwrap_python_model(), SupervisedMetaPolicyModel)
    m = MetaPolicy.load(registered[kind].uri)
    episode = _episode(t, seed=7)
    inputs = {"support_x": episode.x_support, "support_y": episode.y_support, "query_x": episode.x_query}
    out = model.predict(inputs)
    adapted = m.adapt(episode.x_support, episode.y_support)
    np.testing.assert_array_equal(out["predictions"], adapted.predict(episode.x_query))
    if kind == "proto":
        assert set(out) == {"predictions", "probabilities"}
        np.testing.assert_array_equal(out["probabilities"], adapted.predict_proba(episode.x_query))
    else:
        assert set(out) == {"predictions"}
        stepped = model.predict({**inputs, "steps": 1})
        np.testing.assert_array_equal(stepped["predictions"],
                                      m.adapt(episode.x_support, episode.y_support, steps=1).predict(episode.x_query))
    # float64 inputs, and the one-row DataFrame MLflow's serving sends
    wide = model.predict({k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in inputs.items()})
    np.testing.assert_array_equal(wide["predictions"], out["predictions"])
    frame = pd.DataFrame([{k: v.tolist() for k, v in inputs.items()}])
    np.testing.assert_array_equal(model.predict(frame)["predictions"], out["predictions"])
    with pytest.raises(Exception, match="query_x"):
        model.predict({k: v for k, v in inputs.items() if k != "query_x"})


def test_save_and_load_round_trip(registered, proto, tmp_path):
    m = MetaPolicy.load(registered["proto"].uri)
    m.save(tmp_path / "theta")
    loaded = MetaPolicy.load(str(tmp_path / "theta"))
    assert isinstance(loaded, SupervisedMetaModel) and not loaded.adapted and loaded.spec == m.spec
    assert loaded.training_run_id == registered["proto"].run_id and loaded.config == m.config
    for k, v in m.params.items():
        assert torch.equal(loaded.params[k], v)
    episode = _episode(proto, seed=11)
    adapted = m.adapt(episode.x_support, episode.y_support)
    adapted.save(tmp_path / "adapted")
    card = json.loads((tmp_path / "adapted" / "policy.json").read_text())
    assert card["policy_kind"] == "supervised" and card["adapted"] is True and card["problem"] == "classification"
    back = MetaPolicy.load(str(tmp_path / "adapted"))
    assert isinstance(back, SupervisedMetaModel) and back.adapted and set(back.params) == set(adapted.params)
    np.testing.assert_array_equal(back.predict_proba(episode.x_query), adapted.predict_proba(episode.x_query))
    # an unadapted model's card with an adapted model's parameters is refused
    torch.save(torch.load(tmp_path / "adapted" / "params.pt"), tmp_path / "theta" / "params.pt")
    with pytest.raises(ValueError, match=r"unknown parameters \['head.bias', 'head.weight'\]"):
        MetaPolicy.load(str(tmp_path / "theta"))


def test_meta_sgd_alpha_survives_the_round_trip(tmp_path):
    """Meta-SGD's learned step sizes α are meta-parameters beside θ: the model holds them, saves
    and loads them, adapts with them (adapted or not)."""
    torch.manual_seed(0)
    t = _train(_spec("sine-metasgd", {"name": "meta-sgd", "inner_lr": 0.01},
                     {"name": "sinusoid", "params": {"shots": 5, "queries": 10}}, iterations=2))
    state = t.learner.state_dict()
    alpha = {k: v for k, v in state.params.items() if k.startswith("alpha/")}
    assert alpha and any(not torch.allclose(v, torch.full_like(v, 0.01)) for v in alpha.values())  # learned
    m = MetaPolicy.from_learner_state(t.spec, state, source="test")
    assert isinstance(m, SupervisedMetaModel) and m.inner_lr is None and m.default_steps == 1
    m.save(tmp_path / "metasgd")
    loaded = MetaPolicy.load(str(tmp_path / "metasgd"))
    assert isinstance(loaded, SupervisedMetaModel)
    for k, v in alpha.items():
        assert torch.equal(loaded.params[k], v)
    episode = _episode(t, seed=4)
    adapted = loaded.adapt(episode.x_support, episode.y_support)
    np.testing.assert_array_equal(adapted.outputs(episode.x_query), _reference(t, episode))
    assert all(torch.equal(adapted.params[k], v) for k, v in alpha.items())  # α adapts nothing; it stays
    adapted.save(tmp_path / "adapted")
    back = MetaPolicy.load(str(tmp_path / "adapted"))
    assert isinstance(back, SupervisedMetaModel) and back.adapted
    assert all(torch.equal(back.params[k], v) for k, v in alpha.items())
    np.testing.assert_array_equal(back.adapt(episode).outputs(episode.x_query),
                                  adapted.adapt(episode).outputs(episode.x_query))


def test_the_lstm_meta_learner_loads_adapts_and_round_trips(tmp_path):
    """The LSTM meta-learner's weights are meta-parameters beside θ (``metalstm/*``), like α: the
    model holds and saves them, adapts with them, and predicts as the learner does."""
    torch.manual_seed(0)
    t = _train(_spec("digits-metalstm", {"name": "meta-lstm", "inner_steps": 3, "test_inner_steps": 4},
                     {"name": "digits-rotations", "params": {"ways": 3, "shots": 1, "queries": 4}}, iterations=2))
    state = t.learner.state_dict()
    extra = {k: v for k, v in state.params.items() if k.startswith("metalstm/")}
    assert {"metalstm/b_f", "metalstm/b_i", "metalstm/lstm.weight_ih"} <= extra.keys()
    m = MetaPolicy.from_learner_state(t.spec, state, source="test")
    assert isinstance(m, SupervisedMetaModel) and m.default_steps == 4 and m.inner_lr is None
    m.save(tmp_path / "metalstm")
    loaded = MetaPolicy.load(str(tmp_path / "metalstm"))
    episode = _episode(t, seed=2)
    adapted = loaded.adapt(episode.x_support, episode.y_support)
    np.testing.assert_array_equal(adapted.outputs(episode.x_query), _reference(t, episode))
    assert all(torch.equal(adapted.params[k], v) for k, v in extra.items())  # the update rule stays
    with pytest.raises(ValueError, match="steps"):
        loaded.adapt(episode.x_support, episode.y_support, steps=0)
    assert loaded.adapt(episode.x_support, episode.y_support, steps=1).adapted_steps == 1


# ---- meta-test evaluation -------------------------------------------------------------------------------


def _learner_figures(t: Trained, *, tasks: int, seed: int) -> dict[str, float]:
    """The learner's own meta-test on the episodes evaluate() draws."""
    rng = np.random.default_rng(seed)
    episodes = [t.dist.episode(task, rng) for task in t.dist.sample_tasks(tasks, rng, split="test")]
    return t.learner.evaluate(episodes)


def test_evaluate_meta_tests_a_supervised_model(store, registered, maml, proto, kind):
    t = _trained(kind, maml, proto)
    uri = registered[kind].uri
    report = evaluate(uri, tasks=4, seed=0)
    metric = "mse" if kind == "maml" else "accuracy"
    assert report.adaptation == "supervised" and report.metric == metric and report.tasks == 4
    assert report.model_name == t.spec.name and report.model_version == 1 and report.split == "test"
    assert report.episodes == report.eval_episodes == 1 and not report.has_success
    assert report.return_pre is report.return_post is report.success_pre is report.success_post is None
    assert report.return_steps == report.success_steps == () and report.later_lr is None
    assert all(isinstance(r, EpisodeResult) and "test#" in r.task for r in report.results)
    assert [r.index for r in report.results] == [0, 1, 2, 3]
    post: Interval = getattr(report, metric)
    assert post.mean == pytest.approx(np.mean([getattr(r, metric) for r in report.results]))
    assert post.low <= post.mean <= post.high
    # the learner's own meta-test on the same episodes
    figures = _learner_figures(t, tasks=4, seed=0)
    assert post.mean == pytest.approx(figures[f"meta/{metric}"], rel=1e-5)
    if kind == "maml":
        assert report.steps == MAML_STEPS and report.inner_lr == pytest.approx(0.01)
        assert report.ways is None and report.shots == 5 and report.queries == 10
        assert report.mse_pre.mean == pytest.approx(figures["meta/mse_pre"], rel=1e-5)
        assert report.accuracy is None and all(r.support == 5 and r.query == 10 for r in report.results)
        assert set(report.summary) == {"mse", "mse_ci_low", "mse_ci_high", "mse_pre"}
    else:
        assert report.steps == 0 and report.inner_lr is None  # ProtoNets take no inner steps
        assert (report.ways, report.shots, report.queries) == (3, 1, 4)
        assert report.accuracy_pre is None and all(r.accuracy_pre is None for r in report.results)
        assert all(0.0 <= r.accuracy <= 1.0 and r.support == 3 and r.query == 12 for r in report.results)
        assert set(report.summary) == {"accuracy", "accuracy_ci_low", "accuracy_ci_high"}
    assert report.summary[metric] == post.mean and report.summary[f"{metric}_ci_low"] == post.low

    client = mlflow.MlflowClient(store.uri)
    run = client.get_run(report.run_id)
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.data.tags["metarl.adaptation"] == "supervised" and run.data.tags["metarl.model_uri"] == uri
    assert run.data.params["adaptation"] == "supervised" and run.data.params["metric"] == metric
    assert run.data.params["tasks"] == "4" and run.data.params["steps"] == str(report.steps)
    assert run.data.metrics[f"eval/{metric}"] == pytest.approx(post.mean)
    assert run.data.metrics[f"eval/{metric}_ci_high"] == pytest.approx(post.high)
    assert (f"eval/{metric}_pre" in run.data.metrics) == (kind == "maml")
    assert not any(k.startswith(("eval/return", "eval/success")) for k in run.data.metrics)
    logged = sorted((m.step, m.value) for m in client.get_metric_history(report.run_id, f"eval/task_{metric}"))
    assert [v for _, v in logged] == pytest.approx([getattr(r, metric) for r in report.results])
    saved = json.loads(Path(client.download_artifacts(report.run_id, EVALUATION_REPORT)).read_text())
    assert saved["adaptation"] == "supervised" and saved["summary"] == report.summary and saved["tasks"] == 4
    assert saved["return_post"] is None and saved[metric]["mean"] == pytest.approx(post.mean)
    # same seed, same evaluation; another seed, other episodes
    again = evaluate(uri, tasks=4, seed=0, log_to_mlflow=False)
    assert again.run_id is None and again.results == report.results
    assert evaluate(uri, tasks=4, seed=1, log_to_mlflow=False).results != report.results


def test_evaluate_takes_steps_splits_and_the_cli(registered, capsys, monkeypatch):
    sine, digits = registered["maml"].uri, registered["proto"].uri
    one = evaluate(sine, tasks=2, steps=1, seed=0, log_to_mlflow=False)
    assert one.steps == 1 and one.mse.mean != evaluate(sine, tasks=2, seed=0, log_to_mlflow=False).mse.mean
    # steps mean nothing to ProtoNets: not used (the service always sends some)
    assert evaluate(digits, tasks=2, steps=5, seed=0, log_to_mlflow=False).steps == 0
    val = evaluate(digits, tasks=2, split="val", seed=0, log_to_mlflow=False)
    assert val.split == "val" and all("val#" in r.task for r in val.results)
    with pytest.raises(ValueError, match="later_lr.*supervised model"):
        evaluate(sine, tasks=2, later_lr=0.05, log_to_mlflow=False)
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate(sine, tasks=2, split="holdout", log_to_mlflow=False)
    with pytest.raises(ValueError, match="sampled_eval: a supervised model"):
        evaluate(sine, tasks=2, sampled_eval=True, log_to_mlflow=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps nothing
    assert main(["--model", digits, "--tasks", "3", "--no-mlflow"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the title wraps to the table's width
    assert "3 test episodes, 3-way 1-shot, 4 queries per class, no inner steps" in out
    assert "accuracy post" in out and "return" not in out
    assert main(["--model", sine, "--tasks", "2", "--no-mlflow", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["adaptation"] == "supervised" and data["steps"] == MAML_STEPS and len(data["results"]) == 2
    assert set(data["summary"]) == {"mse", "mse_ci_low", "mse_ci_high", "mse_pre"}
    assert main(["--model", sine, "--tasks", "2", "--no-mlflow", "--later-lr", "0.1"]) == 2
    assert "supervised model" in capsys.readouterr().err


def test_an_rl_reports_json_has_no_supervised_fields():
    interval = Interval.of([1.0, 2.0])
    report = EvaluationReport(
        model_uri="x", model_name=None, model_version=None, task_family="navigation2d", episodes=2, steps=1, seed=0,
        eval_episodes=2, deterministic_eval=False, has_success=False,
        results=(TaskResult(0, "t", 1.0, 2.0, 0.0, 0.0, (1.0, 2.0), (0.0, 0.0)),), return_pre=interval,
        return_post=interval, success_pre=interval, success_post=interval, seconds=0.1,
    )
    data = report.to_dict()
    assert not set(SUPERVISED_FIELDS) & set(data) and data["adaptation"] == "gradient" and data["tasks"] == 1
