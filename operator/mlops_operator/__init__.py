"""mlops-operator: the ML lifecycle (train, serve, detect drift, retrain) as Kubernetes custom resources.

The package is layered: ``api`` (pydantic models, the only schema source) <- ``resources`` (pure
builders of child manifests) <- ``controllers`` (kopf handlers, the only layer that imports kopf).
``runtime`` holds the programs that run inside pods and depends on ``api``/``drift`` only.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlops-operator")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
