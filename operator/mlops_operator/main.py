"""``python -m mlops_operator.main``: the same as the ``mlops-operator`` console script."""

import sys

from mlops_operator.cli import main

if __name__ == "__main__":
    sys.exit(main())
