"""ray-reid: fully unsupervised person re-identification at cluster scale.

Core algorithms (data, models, losses, clustering, eval, engine) import no Ray; only
``ray_reid.distributed`` does, so everything below it runs and is tested on its own.
"""

__version__ = "0.1.0"
