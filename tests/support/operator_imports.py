"""What a ``mlops-operator run`` process imports once every handler is registered, read from a fresh
interpreter (the operator's memory is mostly its imports: benchmarks/results/operator.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

_SCRIPT = textwrap.dedent(
    """
    import sys
    from mlops_operator import cli
    cli._keep_kubernetes_client_out()
    import mlops_operator.runner
    print(" ".join(sorted(name for name, module in sys.modules.items() if module and "." not in name)))
    """
)


def top_level_modules(kubeconfig: Path) -> set[str]:
    """Top-level modules of the operator process, with ``KUBECONFIG=kubeconfig``."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def token_kubeconfig(path: Path, user: dict[str, object] | None = None) -> Path:
    """A kubeconfig whose current user is ``user`` (default: a static token)."""
    path.write_text(
        json.dumps(  # JSON is YAML
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "ctx",
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": user if user is not None else {"token": "abc"}}],
            }
        )
    )
    return path
