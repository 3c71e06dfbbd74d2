"""Planning: from a machine and a model to a ranked, explained plan (detection, ranking, estimates, the plan
cache, the CPU's load and share, tune measurements)."""
