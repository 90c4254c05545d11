"""Tuning: per processor, the serving shape that meets a latency target at the lowest cost.

Pure parts only (the search space, the budgeted search, the trials file, the ranking and the Pareto plot): the
trials themselves run through a measurement function handed in (``eks_inference.ops.tune`` runs them on local
serving), so the search's bounds, budget and resume logic are testable without a server.
"""
