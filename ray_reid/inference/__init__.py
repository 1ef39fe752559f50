"""Using a trained model: embed crops, search them, export the network. No Ray here.

The Ray Data pipeline that runs :class:`~ray_reid.inference.model.Embedder` over millions of
crops lives in :mod:`ray_reid.distributed.embed`; everything it calls is in this package, so
the same decode and forward pass serve a notebook, a test and the cluster alike.
"""
