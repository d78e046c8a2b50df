"""Drift statistics (``stats``, numpy), reference profiles (``profile``), the engine that compares them
(``engine``), accumulation of counts from raw data (``accumulate``) and the methods' vocabulary
(``methods``, no numpy). Shared by the runtime and the DriftPolicy controller; imports no API model (the
controller converts, in ``controllers/driftpolicy/evaluation.py``). Importing the package loads nothing:
``methods`` stays light for the API models, numpy comes with the first submodule that needs it.
"""
