"""Pure builders: desired child manifests (plain dicts) computed from a validated spec. No I/O, no kopf."""
