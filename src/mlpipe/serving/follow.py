"""Alias following: a served ``NAME@ALIAS`` (or bare ``NAME``, the latest version) is looked up again every
few seconds; when it names another version, that version is loaded, verified and swapped in."""

from __future__ import annotations

import logging
import threading

from mlpipe.errors import MlpipeError
from mlpipe.serving.model import ModelSlot, open_model

log = logging.getLogger("uvicorn.error")  # uvicorn's own log, so messages appear beside its lines


def follows(ref: str) -> bool:
    """``NAME:VERSION`` is pinned; ``NAME@ALIAS`` and ``NAME`` can move."""
    return ":" not in ref


class AliasFollower:
    """A daemon thread polling the registry. A version that cannot be served (missing or tampered artifact,
    other features than the API was built for) is logged and skipped: the current model stays."""

    def __init__(self, workspace, ref: str, slot: ModelSlot, every_s: float, threads: int = 1):
        self.workspace, self.ref, self.slot, self.every_s, self.threads = workspace, ref, slot, every_s, threads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlpipe-alias-follower", daemon=True)
        self._refused: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.check()
            except MlpipeError as e:
                log.warning("alias follower: %s; still serving %s", e, _label(self.slot.current.info))
            except Exception:  # noqa: BLE001 -- a polling hiccup (e.g. a locked database) must not stop serving
                log.exception("alias follower: lookup of %s failed; still serving %s", self.ref,
                              _label(self.slot.current.info))

    def check(self) -> bool:
        """Look the reference up once; swap when it names another version. True when a swap happened."""
        from mlpipe.store.models import get_version

        current = self.slot.current
        version = get_version(self.workspace, self.ref)
        target = f"{version.name}:{version.version}"
        if int(version.version) == current.version or target == self._refused:
            return False
        try:
            model = open_model(self.workspace, target, self.threads)
        except MlpipeError:
            self._refused = target  # a tampered or missing artifact stays so: say it once
            raise
        spec = "mlpipe.feature_spec"
        if model.features != current.features or model.nullable != current.nullable \
                or model.info["tags"].get(spec) != current.info["tags"].get(spec):
            self._refused = target
            log.warning("alias follower: %s now names %s, whose inputs differ from the API's; restart the "
                        "server to serve it; still serving %s", self.ref, target, _label(current.info))
            return False
        self.slot.swap(model)
        log.info("alias follower: %s moved to %s; now serving it (was %s)", self.ref, target, _label(current.info))
        return True


def _label(info: dict) -> str:
    return f"{info['name']}:{info['version']}"
