# syntax=docker/dockerfile:1.7
# The operator image: `mlops-operator run`. It talks to the Kubernetes API (kopf, and urllib3 + orjson for
# its own requests: no kubernetes client, a pod logs in with its service account) and to MLflow's REST API
# only, so it carries kopf, pydantic, numpy (drift statistics), prometheus-client and mlflow-skinny
# (MlflowClient without pandas/scipy/pyarrow/torch). Training and serving run in Dockerfile.runtime's image.
# tests/unit/test_chart_images.py checks that this list covers what the operator imports.
#   docker build -t ghcr.io/mlops-operator/operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Versions come from requirements.lock (used as constraints: only what is named below is installed).
COPY requirements.lock ./
RUN grep -v '^#' requirements.lock > /tmp/constraints.txt \
    && pip install -c /tmp/constraints.txt \
        kopf pydantic numpy prometheus-client mlflow-skinny pyyaml urllib3 orjson
COPY pyproject.toml README.md ./
COPY operator ./operator
# --no-deps: the package's full dependency list (torch, pandas, full mlflow) is the runtime image's.
RUN pip install --no-deps . \
    && python -c "import mlops_operator.controllers.runner, mlops_operator.mlflow_registry.client"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mlops-operator" \
      org.opencontainers.image.description="Kubernetes operator for the ML lifecycle (kopf)" \
      org.opencontainers.image.source="https://github.com/mlops-operator/mlops-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
COPY --from=build /opt/venv /opt/venv
# Non-root, numeric (Pod Security "restricted" checks runAsNonRoot against a numeric UID).
RUN groupadd --gid 1000 mlops && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin mlops
USER 1000:1000
EXPOSE 8080 9090
ENTRYPOINT ["mlops-operator"]
CMD ["run", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090"]
