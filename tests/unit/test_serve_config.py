"""The model server's configuration from the pod contract's environment."""

from __future__ import annotations

import pytest

from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.runtime.errors import ConfigError
from mlops_operator.runtime.serving.config import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_INFLIGHT, ServerConfig


def test_pod_environment() -> None:
    cfg = ServerConfig.from_env(
        {
            pc.ENV_MODEL_NAME: "iris",
            pc.ENV_MODEL_VERSION: "3",
            pc.ENV_MODEL_URI: "models:/iris/3",
            pc.ENV_MLFLOW_TRACKING_URI: "http://mlflow:5000",
            pc.ENV_MODELDEPLOYMENT_NAME: "iris-md",
            pc.ENV_SERVING_ROLE: "challenger",
            pc.ENV_SERVER_PORT: "9000",
            pc.ENV_INFERENCE_LOG: "/var/log/inference",
            pc.ENV_LOG_SAMPLE_RATE: "0.25",
            pc.ENV_MAX_INFLIGHT: "16",
            pc.ENV_POD_NAME: "iris-md-abc",
        }
    )
    assert (cfg.model_name, cfg.model_version, cfg.model_uri) == ("iris", "3", "models:/iris/3")
    assert (
        cfg.tracking_uri == "http://mlflow:5000" and cfg.deployment == "iris-md" and cfg.role == "challenger"
    )
    assert (cfg.host, cfg.port) == ("0.0.0.0", 9000)  # noqa: S104
    assert cfg.inference_log == "/var/log/inference" and cfg.sample_rate == 0.25
    assert cfg.max_inflight == 16 and cfg.pod == "iris-md-abc"
    assert (
        cfg.max_body_bytes == DEFAULT_MAX_BODY_BYTES and cfg.metrics == "full" and cfg.predict_mode == "auto"
    )


def test_defaults_and_arguments() -> None:
    cfg = ServerConfig.from_env({pc.ENV_MODEL_URI: "models:/m/12"}, ["--host", "127.0.0.1", "--port", "0"])
    assert (cfg.model_name, cfg.model_version) == ("m", "12")
    assert (cfg.host, cfg.port, cfg.role) == ("127.0.0.1", 0, "primary")
    assert cfg.sample_rate == 0.0 and cfg.inference_log is None and cfg.max_inflight == DEFAULT_MAX_INFLIGHT
    cfg = ServerConfig.from_env(
        {pc.ENV_MODEL_NAME: "m", pc.ENV_MODEL_VERSION: "2", pc.ENV_SERVER_PORT: "8081"}
    )
    assert cfg.model_uri == "models:/m/2" and cfg.port == 8081
    # a log without a rate logs everything
    assert (
        ServerConfig.from_env({pc.ENV_MODEL_URI: "models:/m/1", pc.ENV_INFERENCE_LOG: "-"}).sample_rate == 1.0
    )


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "MLOPS_MODEL_URI"),
        ({pc.ENV_MODEL_URI: "models:/m@champion"}, "not a pinned registry URI"),
        ({pc.ENV_MODEL_URI: "runs:/abc/model"}, "not a pinned registry URI"),
        ({pc.ENV_MODEL_URI: "models:/m/1", pc.ENV_MODEL_NAME: "other"}, "does not match"),
        ({pc.ENV_MODEL_URI: "models:/m/1", pc.ENV_MODEL_VERSION: "2"}, "does not match"),
        ({pc.ENV_MODEL_NAME: "m", pc.ENV_MODEL_VERSION: "latest"}, "not a version number"),
        ({pc.ENV_MODEL_URI: "models:/m/1", pc.ENV_SERVING_ROLE: "boss"}, "MLOPS_SERVING_ROLE"),
        ({pc.ENV_MODEL_URI: "models:/m/1", pc.ENV_SERVER_PORT: "http"}, "not an integer"),
        ({pc.ENV_MODEL_URI: "models:/m/1", pc.ENV_SERVER_PORT: "70000"}, "out of range"),
        ({pc.ENV_MODEL_URI: "models:/m/1", pc.ENV_LOG_SAMPLE_RATE: "1.5"}, "out of range"),
        ({pc.ENV_MODEL_URI: "models:/m/1", pc.ENV_LOG_SAMPLE_RATE: "nan"}, "out of range"),
        ({pc.ENV_MODEL_URI: "models:/m/1", pc.ENV_MAX_INFLIGHT: "-1"}, "out of range"),
        ({pc.ENV_MODEL_URI: "models:/m/1", "MLOPS_PREDICT_MODE": "gpu"}, "MLOPS_PREDICT_MODE"),
        ({pc.ENV_MODEL_URI: "models:/m/1", "MLOPS_SERVER_METRICS": "some"}, "MLOPS_SERVER_METRICS"),
    ],
)
def test_invalid_environment(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_env(env)
    assert needle in info.value.message


def test_shadow_settings() -> None:
    from mlops_operator.runtime.serving.shadow import shadow_path

    cfg = ServerConfig.from_env(
        {
            pc.ENV_MODEL_URI: "models:/m/1",
            "MLOPS_SHADOW_URL": "http://md-challenger:8080",
            "MLOPS_SHADOW_PERCENT": "25",
        }
    )
    assert cfg.shadow_url == "http://md-challenger:8080" and cfg.shadow_percent == 25.0
    with pytest.raises(ConfigError):
        ServerConfig.from_env({pc.ENV_MODEL_URI: "models:/m/1", "MLOPS_SHADOW_PERCENT": "150"})
    assert shadow_path("/v2/models/m/versions/3/infer") == "/v2/models/m/infer"
    assert shadow_path("/v2/models/m/infer") == "/v2/models/m/infer"
    assert shadow_path("/invocations") == "/invocations"
