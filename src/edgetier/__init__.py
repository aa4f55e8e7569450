"""EdgeTier: AI inference for fleets of GPU edge nodes.

$ edgetier serve --model-repository models/
$ curl localhost:8000/v2/health/ready
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
