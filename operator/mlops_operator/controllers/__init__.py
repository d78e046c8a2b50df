"""One package per kind: ``trainingjob``, ``modeldeployment``, ``driftpolicy``. Each holds its controller (the
I/O: what it reads and writes, as an object built by the runner with what it needs) and its pure ``status``
module (what the status should say, which transitions are Events, what to do next); the DriftPolicy package
also holds what only drift needs (the scraped ``window``, the ``prometheus`` source, the ``evaluation`` glue
to the drift engine). Importing them registers nothing: ``runner.py`` wires the handlers.
"""
