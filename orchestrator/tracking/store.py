"""Where the MLflow store is, whether it can be used, and how its failures read (one line each)."""
from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, List, Optional

from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from retina.paths import working_dir

DEFAULT_DB_NAME = "mlflow.db"  # in the working directory: what a plain `mlflow ui` started there shows


class TrackingError(ValueError):
    """The tracking store cannot be used; the message is one line."""


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``mlflow.db`` in the working directory: the SQLite file that a
    plain ``mlflow ui`` started there shows (MLflow 3 defaults to ``sqlite:///mlflow.db``)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{working_dir(DEFAULT_DB_NAME)}"


def sqlite_path(uri: str) -> Optional[Path]:
    if not uri.startswith("sqlite:"):
        return None
    path = urllib.parse.unquote(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        raise TrackingError(f"tracking URI {uri!r}: expected a SQLite file, e.g. sqlite:///{working_dir(DEFAULT_DB_NAME)}")
    return Path(path if path.startswith("/") else os.path.abspath(path))


def _file_path(uri: str) -> Optional[Path]:
    if uri.startswith("file:"):
        return Path(urllib.parse.urlparse(uri).path)
    if "://" not in uri and not uri.startswith(("databricks", "sqlite:")):
        return Path(uri).resolve()
    return None


def check_store(uri: str, timeout_s: float = 5.0) -> None:
    """Raise :class:`TrackingError` unless the store at ``uri`` can be used; writes nothing."""
    db = sqlite_path(uri)
    if db is not None:
        if not db.parent.is_dir():
            raise TrackingError(f"tracking store {uri}: folder {db.parent} does not exist; create it or choose "
                                "another --tracking-uri")
        if db.exists() and not os.access(db, os.W_OK):
            raise TrackingError(f"tracking store {uri}: {db} is not writable")
        if not os.access(db.parent, os.W_OK):
            raise TrackingError(f"tracking store {uri}: folder {db.parent} is not writable")
        return
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                if response.status != 200:
                    raise TrackingError(f"MLflow tracking server {uri} answered {response.status} on /health")
        except urllib.error.HTTPError as e:
            raise TrackingError(f"MLflow tracking server {uri} answered {e.code} on /health; is it an MLflow "
                                "server?") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(f"cannot reach the MLflow tracking server at {uri} ({reason}); start it with "
                                "`mlflow server` or choose another --tracking-uri") from None
        return
    path = _file_path(uri)
    if path is not None and not path.parent.is_dir():
        raise TrackingError(f"tracking store {uri}: folder {path.parent} does not exist")


def store_exists(uri: str) -> bool:
    """False when opening the store would create it (a SQLite file or mlruns folder not there yet)."""
    db = sqlite_path(uri)
    if db is not None:
        return db.is_file()
    path = _file_path(uri)
    if path is not None:
        return path.is_dir()
    return True


def artifact_location(uri: str, experiment: str) -> Optional[str]:
    """For a SQLite store: <db folder>/mlruns/<experiment>, where `mlflow ui` started there finds it
    (MLflow's own default would be the current directory's ./mlruns, wherever the driver started)."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.parent / "mlruns" / experiment).as_uri()


def mlflow_client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)


def search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> List[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


_TRANSIENT_HTTP = ("status code 429", "status code 500", "status code 502", "status code 503", "status code 504")


def is_outage(error: BaseException) -> bool:
    """Whether a failed write means "the store is unreachable for now" (retry later) rather than a
    rejected request: a refused or timed-out connection to an MLflow server, a 5xx answer from it or
    its proxy, a locked SQLite file."""
    seen, e = 0, error
    while e is not None and seen < 8:
        name = type(e).__name__
        if name in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError",
                    "NewConnectionError", "ProtocolError", "RemoteDisconnected", "ConnectionRefusedError",
                    "ConnectionResetError", "TimeoutError"):
            return True
        if name == "OperationalError" and "locked" in str(e):
            return True
        if isinstance(e, MlflowException):
            text = str(e)
            if e.error_code == "TEMPORARILY_UNAVAILABLE" or "failed with exception" in text and "API request" in text:
                return True
            if any(code in text for code in _TRANSIENT_HTTP):
                return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def describe_store(uri: str) -> str:
    return uri if not uri.startswith("sqlite:///") else f"{uri} (mlflow ui --backend-store-uri {uri})"


def ensure_quiet() -> None:
    """MLflow's own console chatter (run links, 'created experiment') is not wanted in the live view."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run ..." per run, on a server
    # A stopped server should be noticed within seconds, not after MLflow's own minutes of retries:
    # orchestrator.outbox retries (and buffers) instead.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
