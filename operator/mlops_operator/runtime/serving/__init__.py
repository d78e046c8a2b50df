"""The model server's parts (run inside ModelDeployment pods; entry point ``mlops_operator.runtime.serve``).

- :mod:`.config`: the server's environment (pod contract + server tuning knobs).
- :mod:`.schema`, :mod:`.payload`, :mod:`.outputs`: the model signature, request parsing/validation for the
  Open Inference Protocol v2 and MLflow's ``/invocations``, and response bodies (pure functions).
- :mod:`.model`: loading the pinned version from MLflow and the prediction paths.
- :mod:`.metrics`, :mod:`.histograms`: Prometheus metrics in the server's own registry, per-feature counters
  on the reference profile's bins.
- :mod:`.inference_log`: sampled request/response logging through pluggable sinks, off the request path.
- :mod:`.app`: the ASGI application (routing, overload control, errors).
"""
