"""An Open Inference Protocol v2 client written by others (NVIDIA's tritonclient[http]) against mlops-serve:
health, metadata and inference, with predictions equal to the model's own."""

from __future__ import annotations

import numpy as np
import tritonclient.http as triton

from tests.e2e.test_serve import (
    IRIS,
    Models,
    Server,
    _iris_frame,
    _pyfunc_predict,
    iris_server,
    models,
    serve,
)

__all__ = ["iris_server", "models", "serve"]  # module fixtures reused from test_serve


def test_tritonclient_reads_metadata_and_infers(iris_server: Server, models: Models) -> None:
    client = triton.InferenceServerClient(url=iris_server.url.removeprefix("http://"))
    name, version = models.iris.name, models.iris.version
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(name) and client.is_model_ready(name, version)
    metadata = client.get_model_metadata(name)
    assert [i["name"] for i in metadata["inputs"]] == IRIS

    frame = _iris_frame(16, 3)
    inputs = []
    for column in IRIS:
        tensor = triton.InferInput(column, [len(frame)], "FP64")
        tensor.set_data_from_numpy(frame[column].to_numpy(dtype=np.float64), binary_data=False)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput("predict", binary_data=False)]
    result = client.infer(name, inputs, model_version=version, outputs=outputs, request_id="triton-1")
    expected = np.asarray(_pyfunc_predict(models.iris, frame))
    np.testing.assert_array_equal(result.as_numpy("predict"), expected)
    assert result.get_response()["id"] == "triton-1"

    matrix = triton.InferInput("input-0", [len(frame), 4], "FP32")
    matrix.set_data_from_numpy(frame[IRIS].to_numpy(dtype=np.float32), binary_data=False)
    np.testing.assert_array_equal(client.infer(name, [matrix]).as_numpy("predict"), expected)
