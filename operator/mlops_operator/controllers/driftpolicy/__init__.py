"""The driftpolicy kind: ``controller`` (I/O) and ``status`` (pure decisions)."""
