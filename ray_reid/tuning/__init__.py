"""Sweeps as plain data: the search space and sweep settings (:mod:`.space`), and what a finished
sweep's ResultGrid says (:mod:`.results`). The Ray side (trials, Tuner) is :mod:`ray_reid.distributed.tune`."""
