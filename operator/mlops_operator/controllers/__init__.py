"""kopf handlers, one module per kind; the only layer that imports kopf.

Importing this package registers every handler with kopf's default registry.
"""

from mlops_operator.controllers import driftpolicy, modeldeployment, resync, settings, trainingjob

__all__ = ["driftpolicy", "modeldeployment", "resync", "settings", "trainingjob"]
