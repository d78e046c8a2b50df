"""The modeldeployment kind: ``controller`` (I/O) and ``status`` (pure decisions)."""
