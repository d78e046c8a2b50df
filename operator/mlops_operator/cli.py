"""The ``mlops-operator`` command: ``run`` the operator, print the ``version``, generate ``crds``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mlops_operator import __version__


def _keep_kubernetes_client_out() -> None:
    """kopf imports the official kubernetes client whenever it is installed (to recognise its model objects
    in ``kopf.adopt``): ~25 MiB of every operator's memory for a client the operator does not use (its
    requests go through ``kube/connection.py``). Kept out before kopf is imported, unless the
    kubeconfig needs it to run a credential plugin."""
    from mlops_operator.kube import kubeconfig

    if not kubeconfig.needs_credential_plugin():
        sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]  # None: "import ... fails"


def _run(args: argparse.Namespace) -> int:
    _keep_kubernetes_client_out()
    from mlops_operator.runner import run

    run(
        namespaces=args.namespace or (),
        standalone=not args.peering,
        liveness_endpoint=args.liveness,
        verbose=args.verbose,
        metrics_port=args.metrics_port,
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from mlops_operator.api import generate

    return generate.main([*(args.out or []), *(["--check"] if args.check else [])])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig / in-cluster config")
    run.add_argument(
        "-n", "--namespace", action="append", help="watch only this namespace (repeatable); default: all"
    )
    run.add_argument(
        "--peering", action="store_true", help="coordinate with other replicas (HA: one active at a time)"
    )
    run.add_argument(
        "--liveness", metavar="URL", help="serve a health endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    run.add_argument("--metrics-port", type=int, help="serve the operator's Prometheus metrics on this port")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(handler=_run)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(handler=lambda _args: print(__version__) or 0)

    crds = sub.add_parser(
        "crds", help="generate the CRDs (crds/, the chart's crds/) and docs/api.md from the models"
    )
    crds.add_argument("--out", action="append", metavar="DIR", help="output directory (repeatable)")
    crds.add_argument("--check", action="store_true", help="exit 1 if the files differ from the models")
    crds.set_defaults(handler=_crds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
