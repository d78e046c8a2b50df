"""A thin typed wrapper over ``MlflowClient`` for the controllers: the runs of a TrainingJob and their
progress, registered versions, aliases.

* No global MLflow state: each :class:`Registry` holds its own client bound to one tracking URI.
* Fast failure: for an http(s) server every call first asks ``/health`` with a short timeout, so a server
  that is down costs ``timeout_s`` instead of the MLflow client's minutes of retries. (A server that goes
  down in the middle of a call is still retried by the client per ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` /
  ``MLFLOW_HTTP_REQUEST_TIMEOUT``: set them low in the operator's environment, e.g. 2 and 10.)
* Errors: an unreachable server (or refused credentials) raises :class:`RegistryUnavailableError`; a model,
  version, alias or run that does not exist raises :class:`ModelNotFoundError`; anything else
  :class:`RegistryError`. All three carry a one-line message that names what was asked.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from mlops_operator.api.v1alpha1 import mlflow_contract as names
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.api.v1alpha1.trainingjob import GateResult, TrainingProgress
from mlops_operator.mlflow_registry.errors import classify

if TYPE_CHECKING:  # numpy: imported when a profile is loaded (DriftPolicies only), not by every operator
    from mlops_operator.drift.profile import ReferenceProfile

T = TypeVar("T")

#: Run statuses of MLflow.
RUNNING: Final = "RUNNING"
FINISHED: Final = "FINISHED"
FAILED: Final = "FAILED"
KILLED: Final = "KILLED"


class RegistryError(Exception):
    """An MLflow request failed for a reason other than the two below."""


class RegistryUnavailableError(RegistryError):
    """The MLflow tracking server / model registry cannot be reached (or refuses our credentials)."""


class ModelNotFoundError(RegistryError):
    """The registered model, version, alias or run does not exist."""


def _ms_to_datetime(ms: int | None) -> dt.datetime | None:
    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RunInfo:
    """One MLflow run (one attempt of a TrainingJob)."""

    run_id: str
    experiment_id: str
    status: str
    """RUNNING, FINISHED, FAILED, KILLED (or SCHEDULED)."""
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Latest value of each metric."""

    @property
    def attempt(self) -> str | None:
        return self.tags.get(pc.TAG_ATTEMPT)

    @property
    def trainingjob_uid(self) -> str | None:
        return self.tags.get(pc.TAG_TRAININGJOB_UID)

    @property
    def dataset_digest(self) -> str | None:
        return self.tags.get(pc.TAG_DATASET_DIGEST)

    @property
    def epoch(self) -> int | None:
        """Epochs completed (the latest ``epoch`` metric)."""
        value = self.metrics.get(names.METRIC_EPOCH)
        return int(value) if value is not None else None

    @property
    def total_epochs(self) -> int | None:
        return _int_or_none(self.params.get(names.PARAM_TOTAL_EPOCHS))

    @property
    def model_name(self) -> str | None:
        return self.tags.get(names.TAG_MODEL_NAME)

    @property
    def model_version(self) -> int | None:
        return _int_or_none(self.tags.get(names.TAG_MODEL_VERSION))

    @property
    def model_uri(self) -> str | None:
        return self.tags.get(names.TAG_MODEL_URI)

    @property
    def gate_outcome(self) -> str | None:
        """passed, failed or skipped (None while the gate has not been evaluated)."""
        return self.tags.get(pc.TAG_GATE_RESULT)

    @property
    def gate(self) -> GateResult | None:
        raw = self.tags.get(names.TAG_GATE_DETAIL)
        if not raw:
            return None
        try:
            return GateResult.model_validate(json.loads(raw))
        except ValueError:
            return None

    @property
    def failure_reason(self) -> str | None:
        return self.tags.get(pc.TAG_FAILURE_REASON)

    @property
    def failure_message(self) -> str | None:
        return self.tags.get(names.TAG_FAILURE_MESSAGE)

    @property
    def resumed_from_epoch(self) -> int | None:
        return _int_or_none(self.tags.get(names.TAG_RESUMED_FROM_EPOCH))

    @property
    def progress_metrics(self) -> dict[str, float]:
        """Latest metrics without the epoch counter."""
        return {k: v for k, v in self.metrics.items() if k != names.METRIC_EPOCH}

    @property
    def finished(self) -> bool:
        return self.status in (FINISHED, FAILED, KILLED)


@dataclass(frozen=True)
class TrainingRunView:
    """What the TrainingJob controller copies into status (field names match its ``RunObservation``)."""

    run_id: str
    epoch: int | None
    total_epochs: int | None
    metrics: Mapping[str, float]
    dataset_digest: str | None
    model_version: int | None
    model_uri: str | None
    gate: GateResult | None
    update_time: dt.datetime | None
    status: str
    attempt: str | None
    failure_reason: str | None
    failure_message: str | None

    def progress(self) -> TrainingProgress | None:
        """``status.progress`` (None before the first epoch)."""
        if self.epoch is None:
            return None
        return TrainingProgress.of(self.epoch, self.total_epochs, dict(self.metrics), self.update_time)


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version."""

    name: str
    version: int
    run_id: str | None
    source: str
    status: str
    """READY, PENDING_REGISTRATION or FAILED_REGISTRATION."""
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    description: str = ""
    creation_time: dt.datetime | None = None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def dataset_digest(self) -> str | None:
        return self.tags.get(pc.TAG_DATASET_DIGEST)

    @property
    def trainingjob_uid(self) -> str | None:
        return self.tags.get(pc.TAG_TRAININGJOB_UID)


def _run_info(run: Any) -> RunInfo:
    info, data = run.info, run.data
    return RunInfo(
        run_id=str(info.run_id),
        experiment_id=str(info.experiment_id),
        status=str(info.status),
        start_time=_ms_to_datetime(info.start_time),
        end_time=_ms_to_datetime(info.end_time),
        tags={str(k): str(v) for k, v in (data.tags or {}).items()},
        params={str(k): str(v) for k, v in (data.params or {}).items()},
        metrics={str(k): float(v) for k, v in (data.metrics or {}).items()},
    )


def _version_info(mv: Any) -> VersionInfo:
    return VersionInfo(
        name=str(mv.name),
        version=int(mv.version),
        run_id=str(mv.run_id) if mv.run_id else None,
        source=str(mv.source or ""),
        status=str(mv.status or ""),
        tags={str(k): str(v) for k, v in (mv.tags or {}).items()},
        aliases=tuple(str(a) for a in (getattr(mv, "aliases", None) or ())),
        description=str(mv.description or ""),
        creation_time=_ms_to_datetime(mv.creation_timestamp),
    )


def _quote(value: str) -> str:
    if "'" in value:
        raise RegistryError(f"cannot search MLflow for a value with a quote: {value!r}")
    return f"'{value}'"


class Registry:
    """MLflow tracking + model registry at one URI."""

    def __init__(self, tracking_uri: str, *, timeout_s: float = 5.0, registry_uri: str | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.timeout_s = timeout_s
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)

    def __repr__(self) -> str:
        return f"Registry({self.tracking_uri!r})"

    # --- plumbing ------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise RegistryUnavailableError unless an http(s) server answers ``/health`` within timeout_s."""
        scheme = urllib.parse.urlsplit(self.tracking_uri).scheme.lower()
        if scheme not in ("http", "https"):
            return
        url = self.tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:  # noqa: S310
                if response.status == 200:
                    return
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code}"
        except (OSError, ValueError) as error:
            problem = str(getattr(error, "reason", error))
        raise RegistryUnavailableError(f"MLflow at {self.tracking_uri} is not reachable: {problem}")

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        self.check()
        try:
            return fn()
        except RegistryError:
            raise
        except Exception as error:
            kind = classify(error)
            text = " ".join(str(error).split())[:400]
            if kind == "unavailable":
                raise RegistryUnavailableError(f"{what} at {self.tracking_uri} failed: {text}") from error
            if kind == "auth":
                raise RegistryUnavailableError(
                    f"MLflow at {self.tracking_uri} refused the credentials ({what}): {text}"
                ) from error
            if kind == "not_found" or _is_alias_not_found(error):
                raise ModelNotFoundError(f"{what}: not found ({text})") from error
            raise RegistryError(f"{what} failed: {text}") from error

    # --- runs ----------------------------------------------------------------------------------------
    def _experiment_ids(self, experiments: Sequence[str] | None) -> list[str]:
        if experiments is not None:
            ids = []
            for name in experiments:
                exp = self._client.get_experiment_by_name(name)
                if exp is not None:
                    ids.append(str(exp.experiment_id))
            return ids
        ids, token = [], None
        while True:
            page = self._client.search_experiments(max_results=1000, page_token=token)
            ids.extend(str(e.experiment_id) for e in page)
            token = getattr(page, "token", None)
            if not token:
                return ids

    def training_runs(
        self, uid: str, *, experiments: Sequence[str] | None = None, max_results: int = 100
    ) -> list[RunInfo]:
        """Runs (attempts) of the TrainingJob with this uid, newest first. ``experiments`` (names) narrows
        the search; default: every experiment."""

        def search() -> list[RunInfo]:
            ids = self._experiment_ids(experiments)
            if not ids:
                return []
            runs = self._client.search_runs(
                experiment_ids=ids,
                filter_string=f"tags.`{pc.TAG_TRAININGJOB_UID}` = {_quote(uid)}",
                order_by=["attributes.start_time DESC"],
                max_results=max_results,
            )
            return [_run_info(r) for r in runs]

        return self._call(f"search the runs of TrainingJob {uid}", search)

    def latest_training_run(self, uid: str, *, experiments: Sequence[str] | None = None) -> RunInfo | None:
        """The latest attempt's run (by start time)."""
        runs = self.training_runs(uid, experiments=experiments, max_results=1)
        return runs[0] if runs else None

    def get_run(self, run_id: str) -> RunInfo:
        return self._call(f"get run {run_id}", lambda: _run_info(self._client.get_run(run_id)))

    def last_update(self, run: RunInfo) -> dt.datetime | None:
        """When the run last reported an epoch (else when it ended or started)."""

        def history() -> dt.datetime | None:
            points = self._client.get_metric_history(run.run_id, names.METRIC_EPOCH)
            latest = max((p.timestamp for p in points), default=None)
            return _ms_to_datetime(latest) or run.end_time or run.start_time

        return self._call(f"read the progress of run {run.run_id}", history)

    def progress(self, run: RunInfo) -> TrainingProgress | None:
        """``status.progress`` of a run (None before its first epoch)."""
        if run.epoch is None:
            return None
        return TrainingProgress.of(run.epoch, run.total_epochs, run.progress_metrics, self.last_update(run))

    def observe_training_job(
        self, uid: str, *, experiments: Sequence[str] | None = None
    ) -> TrainingRunView | None:
        """Everything status needs from the latest attempt's run, or None when no run exists yet."""
        run = self.latest_training_run(uid, experiments=experiments)
        if run is None:
            return None
        return TrainingRunView(
            run_id=run.run_id,
            epoch=run.epoch,
            total_epochs=run.total_epochs,
            metrics=run.progress_metrics,
            dataset_digest=run.dataset_digest,
            model_version=run.model_version,
            model_uri=run.model_uri,
            gate=run.gate,
            update_time=self.last_update(run) if run.epoch is not None else (run.end_time or run.start_time),
            status=run.status,
            attempt=run.attempt,
            failure_reason=run.failure_reason,
            failure_message=run.failure_message,
        )

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """Latest value of every metric of a run."""
        return dict(self.get_run(run_id).metrics)

    def reference_profile(self, name: str, version: int) -> ReferenceProfile:
        """The reference profile (``PROFILE_ARTIFACT``) of the run that produced version ``version`` of
        ``name``: ModelNotFoundError when the version or its profile does not exist, RegistryError when the
        profile cannot be read."""
        info = self.get_version(name, version)
        if not info.run_id:
            raise ModelNotFoundError(
                f"version {version} of model {name} has no run, hence no reference profile"
            )
        run_id = info.run_id

        def download() -> str:
            with tempfile.TemporaryDirectory(prefix="mlops-profile-") as tmp:
                path = self._client.download_artifacts(run_id, pc.PROFILE_ARTIFACT, dst_path=tmp)
                return Path(path).read_text(encoding="utf-8")

        try:
            text = self._call(f"download {pc.PROFILE_ARTIFACT} of run {run_id} ({name} v{version})", download)
        except RegistryError as error:
            if isinstance(error, RegistryUnavailableError):
                raise
            raise ModelNotFoundError(
                f"version {version} of model {name} has no readable {pc.PROFILE_ARTIFACT} "
                f"in run {run_id}: {error}"
            ) from error
        from mlops_operator.drift.profile import ProfileError, load_profile

        try:
            return load_profile(text)
        except ProfileError as error:
            raise RegistryError(
                f"{pc.PROFILE_ARTIFACT} of {name} v{version} (run {run_id}): {error}"
            ) from error

    # --- model versions and aliases --------------------------------------------------------------------
    def get_version(self, name: str, version: int) -> VersionInfo:
        """Version ``version`` of ``name`` (ModelNotFoundError when either does not exist)."""
        return self._call(
            f"get version {version} of model {name}",
            lambda: _version_info(self._client.get_model_version(name, str(version))),
        )

    describe_version = get_version

    def alias_version(self, name: str, alias: str) -> VersionInfo:
        """The version holding ``alias`` (ModelNotFoundError when the model or the alias does not exist)."""
        return self._call(
            f"resolve alias {alias} of model {name}",
            lambda: _version_info(self._client.get_model_version_by_alias(name, alias)),
        )

    def resolve_alias(self, name: str, alias: str) -> int:
        """The version number holding ``alias``."""
        return self.alias_version(name, alias).version

    def find_alias(self, name: str, alias: str) -> VersionInfo | None:
        """Like :meth:`alias_version`, None instead of ModelNotFoundError."""
        try:
            return self.alias_version(name, alias)
        except ModelNotFoundError:
            return None

    def set_alias(self, name: str, alias: str, version: int) -> VersionInfo:
        """Point ``alias`` at ``version`` (moving it if another version holds it); returns that version."""

        def move() -> VersionInfo:
            self._client.get_model_version(name, str(version))  # a clear not-found for a missing version
            self._client.set_registered_model_alias(name, alias, str(version))
            return _version_info(self._client.get_model_version(name, str(version)))

        return self._call(f"set alias {alias} of model {name} to version {version}", move)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` (no error when it does not exist)."""
        try:
            self._call(
                f"delete alias {alias} of model {name}",
                lambda: self._client.delete_registered_model_alias(name, alias),
            )
        except ModelNotFoundError:
            return

    def aliases(self, name: str) -> dict[str, int]:
        """Every alias of the registered model and the version it points to."""

        def read() -> dict[str, int]:
            model = self._client.get_registered_model(name)
            return {str(k): int(v) for k, v in (getattr(model, "aliases", None) or {}).items()}

        return self._call(f"read the aliases of model {name}", read)

    def versions(self, name: str, *, tags: Mapping[str, str] | None = None) -> list[VersionInfo]:
        """Versions of ``name`` (optionally only those with all ``tags``), newest first."""

        def search() -> list[VersionInfo]:
            clauses = [f"name = {_quote(name)}"]
            clauses += [f"tags.`{k}` = {_quote(v)}" for k, v in (tags or {}).items()]
            found = self._client.search_model_versions(" and ".join(clauses))
            return sorted((_version_info(v) for v in found), key=lambda v: v.version, reverse=True)

        return self._call(f"search the versions of model {name}", search)

    def trainingjob_versions(self, name: str, uid: str) -> list[VersionInfo]:
        """Versions of ``name`` registered by the TrainingJob with this uid (at most one, normally)."""
        return self.versions(name, tags={pc.TAG_TRAININGJOB_UID: uid})

    def latest_version(self, name: str) -> VersionInfo | None:
        versions = self.versions(name)
        return versions[0] if versions else None


def _is_alias_not_found(error: BaseException) -> bool:
    # MLflow answers INVALID_PARAMETER_VALUE "Registered model alias X not found" for a missing alias
    return (
        getattr(error, "error_code", None) == "INVALID_PARAMETER_VALUE" and "not found" in str(error).lower()
    )


_cache: dict[str, Registry] = {}
_cache_lock = threading.Lock()


def registry_for(tracking_uri: str | None) -> Registry:
    """A (cached) Registry for ``tracking_uri``, or for ``$MLFLOW_TRACKING_URI`` when None."""
    uri = tracking_uri or os.environ.get(pc.ENV_MLFLOW_TRACKING_URI)
    if not uri:
        raise RegistryUnavailableError(
            "no MLflow tracking URI: set spec.mlflow.trackingUri or the operator's MLFLOW_TRACKING_URI"
        )
    with _cache_lock:
        registry = _cache.get(uri)
        if registry is None:
            registry = _cache[uri] = Registry(uri)
        return registry
