"""The ``mlops-operator`` command: ``run`` the operator, print the ``version``, generate ``crds``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlops_operator import __version__

DEFAULT_CRD_DIRS = (Path("crds"), Path("charts/mlops-operator/crds"))


def _run(args: argparse.Namespace) -> int:
    from mlops_operator.controllers.runner import run

    run(
        namespaces=args.namespace or (),
        standalone=not args.peering,
        liveness_endpoint=args.liveness,
        verbose=args.verbose,
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from mlops_operator.api.crdgen import check_crds, write_crds

    directories = [Path(d) for d in args.out] if args.out else list(DEFAULT_CRD_DIRS)
    if args.check:
        stale = check_crds(*directories)
        if stale:
            print("CRDs are out of date with the models; run `make crds`:", file=sys.stderr)
            for name in stale:
                print(f"  {name}", file=sys.stderr)
            return 1
        print("CRDs are up to date")
        return 0
    for path in write_crds(*directories):
        print(path)
    return 0


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
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(handler=_run)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(handler=lambda _args: print(__version__) or 0)

    crds = sub.add_parser("crds", help="generate CRD YAML from the API models")
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
