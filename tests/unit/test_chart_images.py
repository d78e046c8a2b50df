"""Static checks of the container images, the chart's image values and the kind scripts (no Docker engine
here: the Dockerfiles are checked structurally; `hadolint` runs in CI where it is installed)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlops-operator"
DOCKERFILES = ["Dockerfile", "Dockerfile.runtime"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def final_stage(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(rows) if word == "FROM")
    return rows[last_from:]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_is_slim_multistage_and_non_root(name: str) -> None:
    rows = instructions(REPO / name)
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in rows if word == "ARG" and "=" in rest
    }
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    froms = [rest for word, rest in rows if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay out of the final image"
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    final = final_stage(rows)
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1] == "1000:1000", "the final stage must run as the numeric non-root user 1000"
    assert any(word == "COPY" and "--from=build" in rest for word, rest in final)
    for word, rest in rows:
        assert word != "ADD", "use COPY (ADD fetches URLs and unpacks archives implicitly)"
        if word == "RUN" and "pip install" in rest:
            assert "-c /tmp/constraints.txt" in rest or "--no-deps" in rest, f"unpinned pip install: {rest}"
        assert ":latest" not in rest
    ignore = (REPO / f"{name}.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :], "the build context allows only what the image needs"


def test_operator_image_has_no_training_stack() -> None:
    text = (REPO / "Dockerfile").read_text()
    pip_lines = " ".join(rest for word, rest in instructions(REPO / "Dockerfile") if word == "RUN")
    assert "mlflow-skinny" in pip_lines and "kopf" in pip_lines
    for heavy in ("torch", "pandas", "pyarrow", "mlflow "):
        assert heavy not in pip_lines, heavy
    assert 'ENTRYPOINT ["mlops-operator"]' in text


def _operator_image_packages() -> set[str]:
    """The distributions the operator image's ``pip install -c constraints`` names."""
    for word, rest in instructions(REPO / "Dockerfile"):
        if word == "RUN" and "pip install -c /tmp/constraints.txt" in rest:
            names = rest.split("pip install -c /tmp/constraints.txt", 1)[1].split("&&")[0].split()
            return {canonical(name) for name in names}
    raise AssertionError("no constrained pip install in Dockerfile")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _with_dependencies(names: set[str]) -> set[str]:
    """``names`` and everything they require (markers evaluated here, extras not followed), by the
    installed metadata."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonical(requirement.name))
    return seen


def test_the_operator_image_installs_everything_the_operator_imports(tmp_path: Path) -> None:
    """The image's package list is written by hand: an import added to the operator (orjson, once) must not
    first fail in a cluster."""
    from importlib import metadata

    from tests.support.operator_imports import token_kubeconfig, top_level_modules

    providers = metadata.packages_distributions()
    modules = top_level_modules(token_kubeconfig(tmp_path / "kubeconfig"))
    needed = {canonical(dist) for module in modules for dist in providers.get(module, ())}
    # imported only because this venv has them: aiohttp's optional brotli, setuptools' site hook
    needed -= {"mlops-operator", "brotli", "setuptools"}
    installed = _with_dependencies(_operator_image_packages())
    assert needed <= installed, f"imported but not in the operator image: {sorted(needed - installed)}"
    assert "kubernetes" not in installed, "in a pod the operator logs in with its service account"


def test_runtime_image_selects_the_torch_build() -> None:
    rows = instructions(REPO / "Dockerfile.runtime")
    args = [rest for word, rest in rows if word == "ARG"]
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in args
    assert any(word == "RUN" and '--index-url "${TORCH_INDEX_URL}"' in rest for word, rest in rows)


def test_chart_image_values_match_the_images_and_the_operator_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert values["image"]["repository"] == "ghcr.io/mlops-operator/operator"
    assert values["runtimeImage"]["repository"] == "ghcr.io/mlops-operator/runtime"
    from mlops_operator import __version__
    from mlops_operator.api.v1alpha1 import RUNTIME_IMAGE_REPOSITORY

    assert values["runtimeImage"]["repository"] == RUNTIME_IMAGE_REPOSITORY
    assert chart["appVersion"] == __version__.split("+", 1)[0]
    assert chart["apiVersion"] == "v2"
    # Dockerfile and chart agree on the ports and the user.
    assert values["health"]["port"] == 8080 and values["metrics"]["port"] == 9090
    assert "EXPOSE 8080 9090" in (REPO / "Dockerfile").read_text()
    assert values["podSecurityContext"]["runAsUser"] == 1000
    assert values["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("script", ["hack/kind-up.sh", "hack/kind-deploy.sh"])
def test_kind_scripts_parse(script: str) -> None:
    path = REPO / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in path.read_text()
    subprocess.run(["bash", "-n", str(path)], check=True)
