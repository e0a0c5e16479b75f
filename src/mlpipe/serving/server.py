"""Running the API on uvicorn: verify the model first (a bad one never starts a server), then serve."""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

from pydantic import BaseModel, Field

from mlpipe.errors import ConfigError, MlpipeError

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
TOKEN_ENV = "MLPIPE_SERVE_TOKEN"
_SETTINGS_ENV = "MLPIPE_SERVE_SETTINGS"  # how the parent hands its settings to uvicorn's worker processes


class ServeSettings(BaseModel):
    workspace: str
    ref: str
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: Optional[str] = Field(None, min_length=1)
    poll_s: float = Field(5.0, gt=0, description="how often an alias is looked up again")
    workers: int = Field(1, ge=1, le=64)
    threads: int = Field(1, ge=0, le=64, description="onnxruntime intra-op threads per worker (0: one per core)")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1)
    access_log: bool = False
    max_clock_skew_s: float = Field(600.0, ge=0, description="observations further in the future are refused")
    log_forecasts: bool = Field(True, description="keep every answer in the workspace's forecast log")


def build_app(settings: ServeSettings):
    """Load and verify the model, then the app around it (with an alias follower where the ref can move)."""
    from mlpipe.serving.app import create_app
    from mlpipe.serving.follow import AliasFollower, follows
    from mlpipe.serving.forecast import Forecaster, has_history, stream_of
    from mlpipe.serving.model import ModelSlot, open_model
    from mlpipe.store.observations import ObservationStore
    from mlpipe.store.workspace import Workspace

    ws = Workspace(settings.workspace)
    slot = ModelSlot(open_model(ws, settings.ref, settings.threads))
    follower = None
    if follows(settings.ref):
        follower = AliasFollower(ws, settings.ref, slot, settings.poll_s, settings.threads)
    forecaster = None
    if has_history(slot.current.recipe) and slot.current.categorical:
        print(f"note: {slot.current.name}:{slot.current.version} has categorical inputs: /observations and "
              f"/forecast take numeric models only so far; POST /predict answers it", file=sys.stderr)
    elif has_history(slot.current.recipe):
        forecaster = Forecaster(ObservationStore.of(ws), stream_of(slot.current.info), slot.current.recipe,
                                settings.max_clock_skew_s)
    log = None
    if settings.log_forecasts:
        from mlpipe.monitoring.log import FOLDER, ForecastLog

        log = ForecastLog(ws.root / FOLDER)
    return create_app(slot, ref=settings.ref, token=settings.token, max_body_bytes=settings.max_body_bytes,
                      follower=follower, forecaster=forecaster, log=log)


def worker_app():
    """The app factory each uvicorn worker process calls (``--workers`` > 1)."""
    return build_app(ServeSettings.model_validate_json(os.environ[_SETTINGS_ENV]))


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(settings: ServeSettings) -> None:
    """Serve until interrupted. The model is loaded and checked here first, so a missing or tampered one
    ends with its error before any port is opened."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise MlpipeError(f"mlpipe serve needs {e.name}: pip install 'mlpipe[serve]'") from None
    if not is_loopback(settings.host) and not settings.token:
        raise ConfigError(f"--host {settings.host}: listening beyond loopback needs --token (or ${TOKEN_ENV}): "
                          f"anyone who reaches the server could use the model and rewrite observations")
    app = build_app(settings)
    where = f"http://{settings.host}:{settings.port}"
    print(f"serving {settings.ref} at {where} (docs: {where}/docs)", file=sys.stderr)
    options = dict(host=settings.host, port=settings.port, access_log=settings.access_log, log_level="info",
                   timeout_graceful_shutdown=10)
    if settings.workers == 1:
        uvicorn.run(app, **options)
        return
    del app  # each worker loads its own copy
    os.environ[_SETTINGS_ENV] = json.dumps(settings.model_dump())
    uvicorn.run("mlpipe.serving.server:worker_app", factory=True, workers=settings.workers, **options)
