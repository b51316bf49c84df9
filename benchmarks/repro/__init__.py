"""The parts of ``benchmarks/reproduce.py`` (the command line), one role each.

* :mod:`.suites`: the papers' settings (job specs, meta-test protocols, published numbers,
  targets, the rows of the results table), and suites that train several algorithms (RL² and
  MAML) on one env-step budget: data.
* :mod:`.state`: the work directory's ``state.json`` (what has been trained and meta-tested).
* :mod:`.train`: meta-training a suite's jobs with the engine, resumably, within a time budget.
* :mod:`.meta_test`: choosing a checkpoint on validation tasks and meta-testing the models.
* :mod:`.results`: aggregation over seeds and the result file (JSON); :mod:`.plots` its PNGs.
* :mod:`.table`: the results table of ``docs/results.md``, generated from the result files.
* :mod:`.pipeline`: one ``--suite`` run, all of the above in order.
"""
