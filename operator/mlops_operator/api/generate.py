"""``make crds``: write (or ``--check``) the generated files of the API, the CRDs (``crdgen``) and the API
reference ``docs/api.md`` (``docgen``, which reads the schemas ``crdgen`` makes).

Run ``python -m mlops_operator.api.generate`` from the repository root (``PYTHONPATH=operator``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import crdgen, docgen


def main(argv: list[str] | None = None) -> int:
    """``python -m mlops_operator.api.generate [--check] [--docs FILE] [DIR ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m mlops_operator.api.generate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "directories", nargs="*", type=Path, help="output directories (default: crds/ and the chart's)"
    )
    parser.add_argument(
        "--check", action="store_true", help="only report files that are out of date; exit 1 if any"
    )
    parser.add_argument(
        "--docs", type=Path, default=docgen.DEFAULT_PATH, help="API reference to (re)generate"
    )
    parser.add_argument("--no-docs", action="store_true", help="leave the API reference alone")
    args = parser.parse_args(argv)
    directories = tuple(args.directories) or crdgen.DEFAULT_DIRECTORIES

    if args.check:
        problems = crdgen.check_crds(*directories)
        if not args.no_docs and not docgen.check_docs(args.docs):
            problems.append(str(args.docs))
        for problem in problems:
            print(f"out of date: {problem}", file=sys.stderr)
        if problems:
            print("run `make crds` and commit the result", file=sys.stderr)
        return 1 if problems else 0

    for path in crdgen.write_crds(*directories):
        print(path)
    if not args.no_docs:
        print(docgen.write_docs(args.docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
