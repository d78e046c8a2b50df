"""Register the benchmark models in an MLflow server, the way the trainer does: the built-in
TabularPyfuncModel (standardisation + a torch MLP) as a pyfunc with a signature and an input example,
and the run's ``reference_profile.json``.

    python benchmarks/serving/models.py --tracking-uri http://127.0.0.1:5000 --name iris --hidden 16

Weights are random (the benchmark measures serving, not accuracy), seeded for reproducibility.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    uri: str
    run_id: str
    parameters: int


def iris_like(rows: int, seed: int) -> tuple[object, np.ndarray]:
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)) * [0.8, 0.4, 1.7, 0.7] + [5.8, 3.0, 3.7, 1.2]
    frame = pd.DataFrame(np.round(x, 1), columns=list(FEATURES))
    labels = np.digitize(frame["petal_length"].to_numpy(), [2.5, 4.9])
    return frame, labels


def register_tabular(
    tracking_uri: str, name: str, hidden: list[int], *, seed: int = 0, experiment: str = "serving-benchmark"
) -> Registered:
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from mlops_operator.api.v1alpha1.pod_contract import PROFILE_ARTIFACT
    from mlops_operator.drift.profile import build_profile
    from mlops_operator.runtime.tabular_model import Architecture, Preprocessor, TabularPyfuncModel

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    frame, labels = iris_like(300, seed)
    pre = Preprocessor(
        task="classification",
        features=list(FEATURES),
        kinds=dict.fromkeys(FEATURES, "numeric"),
        means={f: float(frame[f].mean()) for f in FEATURES},
        stds={f: float(frame[f].std(ddof=0)) for f in FEATURES},
        classes=[0, 1, 2],
    )
    arch = Architecture(input_dim=pre.input_dim, hidden=list(hidden), output_dim=pre.output_dim)
    torch.manual_seed(seed)
    net = arch.build()
    params = sum(p.numel() for p in net.parameters())
    model = TabularPyfuncModel.from_module(net, pre, arch)
    example = frame.head(5)
    signature = infer_signature(example, model.predict(None, example))
    with mlflow.start_run(run_name=f"{name}-serving-benchmark") as run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=signature,
            input_example=example,
            pip_requirements=["mlflow", "torch", "pandas", "numpy"],
            registered_model_name=name,
        )
        columns = {c: frame[c].to_numpy() for c in FEATURES}
        columns["label"] = labels
        profile = build_profile(columns, features=list(FEATURES), target="label", target_type="categorical")
        mlflow.log_text(profile.to_json(), PROFILE_ARTIFACT)
    version = str(info.registered_model_version)
    return Registered(name, version, f"models:/{name}/{version}", run.info.run_id, params)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--hidden", type=int, nargs="+", default=[16])
    args = parser.parse_args()
    reg = register_tabular(args.tracking_uri, args.name, args.hidden)
    print(f"{reg.uri} run={reg.run_id} parameters={reg.parameters}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
