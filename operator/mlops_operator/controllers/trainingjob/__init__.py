"""The trainingjob kind: ``controller`` (I/O) and ``status`` (pure decisions)."""
