"""Where dataset files live: a local folder, or any MLflow artifact location (``mlflow-artifacts:/…`` through
a tracking server, ``s3://…``, …). Files are immutable and named by their content digest; a file is complete
under its final name or absent (local: temporary file, fsync, rename; remote: uploaded whole before the
catalog row that names it is written)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def open_store(location: str | os.PathLike) -> "LocalStore | ArtifactStore":
    """A store for a local path / ``file://`` URI, or an MLflow artifact URI."""
    text = str(location)
    if text.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return LocalStore(Path(unquote(urlparse(text).path)))
    if "://" in text or text.startswith("mlflow-artifacts:"):
        return ArtifactStore(text.rstrip("/"))
    return LocalStore(Path(text))


class LocalStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return str(self.root)

    def where(self, rel: str) -> str:
        return str(self.root / rel)

    @contextmanager
    def staging(self, rel_dir: str) -> Iterator[Path]:
        """A folder for temporary files on the same file system as their final place (so rename is atomic)."""
        folder = self.root / rel_dir
        folder.mkdir(parents=True, exist_ok=True)
        yield folder

    def name_for(self, folder: str, digest: str) -> str:
        """Content-addressed: writers of the same content rename onto the same complete file."""
        return f"{folder}/{digest}.parquet"

    def put(self, tmp: Path, rel: str) -> None:
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    @contextmanager
    def local_copy(self, rel: str) -> Iterator[Path]:
        path = self.root / rel
        if not path.is_file():
            raise FileNotFoundError(path)
        yield path


class ArtifactStore:
    """Dataset files in an MLflow artifact repository (resolved against the current MLflow tracking URI)."""

    def __init__(self, uri: str):
        self.uri = uri

    def __repr__(self) -> str:
        return self.uri

    def where(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    def _repo(self):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(self.uri)

    @contextmanager
    def staging(self, rel_dir: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="mlpipe-stage-") as tmp:
            yield Path(tmp)

    def name_for(self, folder: str, digest: str) -> str:
        """Unique per upload: an object store has no atomic rename, so two runs uploading the same content
        at once must not write the same object. The catalog keeps the name of the upload it committed."""
        import uuid

        return f"{folder}/{digest}-{uuid.uuid4().hex[:12]}.parquet"

    def put(self, tmp: Path, rel: str) -> None:
        folder, _, name = rel.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="mlpipe-put-") as d:
            named = Path(d) / name
            shutil.move(tmp, named)
            self._repo().log_artifact(str(named), artifact_path=folder or None)

    @contextmanager
    def local_copy(self, rel: str) -> Iterator[Path]:
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory(prefix="mlpipe-get-") as d:
            try:
                local = self._repo().download_artifacts(rel, dst_path=d)
            except (MlflowException, OSError) as e:
                raise FileNotFoundError(f"{self.where(rel)}: {e}") from None
            yield Path(local)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
