"""The model registry, read side: references, listing, showing and fetching verified ONNX models."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlpipe.errors import IntegrityError, NotFoundError

CHAMPION = "champion"
PENDING_CHAMPION = "mlpipe.champion_pending"
"""Registered-model tag: a champion move to this version was decided and is not finished yet."""
_REF = re.compile(r"^(?P<name>[^:@]+)(?::(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_-]+))?$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def list_models(workspace) -> list[dict]:
    """``[{"name", "versions", "aliases"}]``; empty for a workspace that does not exist yet."""
    if not workspace.exists():
        return []
    client = workspace.client
    out = []
    for rm in sorted(client.search_registered_models(max_results=1000), key=lambda m: m.name):
        versions = client.search_model_versions(f"name='{rm.name}'", max_results=10000)
        out.append({"name": rm.name, "versions": sorted(int(v.version) for v in versions),
                    "aliases": {a: int(v) for a, v in (rm.aliases or {}).items()}})
    return out


def get_version(workspace, ref: str):
    """The MLflow ModelVersion that ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS`` names."""
    m = _REF.match(ref.strip())
    if m is None:
        raise NotFoundError(f"model reference {ref!r} is not NAME, NAME:VERSION or NAME@ALIAS")
    if not workspace.exists():
        raise NotFoundError(f"model {ref!r} does not exist (workspace {workspace.root} has no registry)")
    from mlflow.exceptions import MlflowException

    client, name = workspace.client, m["name"]
    try:
        if m["alias"]:
            return client.get_model_version_by_alias(name, m["alias"])
        if m["version"]:
            return client.get_model_version(name, m["version"])
        versions = client.search_model_versions(f"name='{name}'", max_results=10000)
    except MlflowException:
        raise NotFoundError(f"model {ref!r} does not exist") from None
    if not versions:
        raise NotFoundError(f"model {ref!r} does not exist")
    return max(versions, key=lambda v: int(v.version))


def describe(version) -> dict:
    """The contract's ``models show`` object of a registered version."""
    tags = dict(version.tags)
    datasets = {role: {"name": tags.get(f"dataset.{role}.name"), "version": _int(tags.get(f"dataset.{role}.version")),
                       "digest": tags.get(f"dataset.{role}.digest")} for role in ("train", "validation", "test")
                if role != "validation" or f"dataset.{role}.name" in tags}  # versions before validation had none
    return {
        "name": version.name, "version": int(version.version), "aliases": sorted(version.aliases or []),
        "kind": tags.get("mlpipe.kind"), "features": json.loads(tags.get("mlpipe.features", "[]")),
        "categorical": json.loads(tags.get("mlpipe.categorical", "[]")),
        "classes": json.loads(tags["mlpipe.classes"]) if "mlpipe.classes" in tags else None,
        "categories": json.loads(tags.get("mlpipe.categories", "{}")),
        "metrics": {k.removeprefix("metric."): float(v) for k, v in sorted(tags.items()) if k.startswith("metric.")},
        "validation": {k.removeprefix("validation."): float(v) for k, v in sorted(tags.items())
                       if k.startswith("validation.")},
        "params": {k.removeprefix("param."): v for k, v in sorted(tags.items()) if k.startswith("param.")},
        "datasets": datasets, "run_id": version.run_id, "git_commit": tags.get("mlpipe.git_commit"),
        "onnx_sha256": tags.get("mlpipe.onnx_sha256"), "description": version.description,
        "created_at": version.creation_timestamp, "tags": tags,
    }


def _int(value: str | None) -> int | None:
    return int(value) if value is not None else None


@dataclass(frozen=True)
class LoadedModel:
    onnx: bytes
    info: dict

    @property
    def features(self) -> list[str]:
        return self.info["features"]


def load_model(workspace, ref: str) -> LoadedModel:
    """Fetch a registered model's ONNX bytes and check them against the registry's SHA-256."""
    import mlflow

    version = get_version(workspace, ref)
    info = describe(version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"{version.source}/model.onnx", dst_path=tmp)
            data = Path(local).read_bytes()
        except (OSError, mlflow.exceptions.MlflowException) as e:
            raise IntegrityError(f"model {info['name']}:{info['version']}: ONNX artifact is missing: {e}") from None
    if sha256(data) != info["onnx_sha256"]:
        raise IntegrityError(f"model {info['name']}:{info['version']}: ONNX artifact does not match the registered "
                             f"SHA-256 (tampered or truncated)")
    return LoadedModel(data, info)


def download_model(workspace, ref: str, dest: Path) -> dict:
    """Write ``dest/model.onnx`` (verified) and ``dest/model.json`` (the ``show`` object)."""
    model = load_model(workspace, ref)
    dest.mkdir(parents=True, exist_ok=True)
    write_atomic(dest / "model.onnx", model.onnx)
    write_atomic(dest / "model.json", json.dumps(model.info, indent=2).encode())
    return model.info


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
