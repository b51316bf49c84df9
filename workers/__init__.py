"""Workers: task families, the sampler, rollout actors, the learner and the job driver.

Only the modules that define actors and the driver import ray; task families and the sampler
run without a cluster.
"""
