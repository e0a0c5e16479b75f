"""Check a workspace's registries end to end, through the same API every command uses: every model version
complete (its tags, its ONNX artifact matching the registered SHA-256 and loadable by onnxruntime, its
dataset versions registered), every dataset version's file present with the registered digest, versions
numbered 1..n without gaps, and at most one ``champion`` per model prefix, on a complete version."""

from __future__ import annotations

from collections import defaultdict

from mlpipe.errors import MlpipeError

REQUIRED_TAGS = ("mlpipe.kind", "mlpipe.features", "mlpipe.onnx_sha256", "metric.f1",
                 "dataset.train.name", "dataset.train.version", "dataset.train.digest",
                 "dataset.test.name", "dataset.test.version", "dataset.test.digest")


def check(workspace) -> list[str]:
    """Every problem found, one line each (empty: the registries are complete)."""
    problems: list[str] = []
    datasets = _check_datasets(workspace, problems)
    if workspace.exists():
        _check_models(workspace, datasets, problems)
    return problems


def _check_datasets(workspace, problems: list[str]) -> dict[tuple[str, int], str]:
    """Load every version of every dataset (digest-verified); returns (name, version) -> digest."""
    registry, found = workspace.datasets, {}
    for newest in registry.list():
        for v in range(1, newest.version + 1):
            ref = f"{newest.name}:{v}"
            try:
                version = registry.get(ref)
                registry.load(ref)
            except MlpipeError as e:
                problems.append(f"dataset {ref}: {e}")
                continue
            found[(version.name, version.version)] = version.digest
    return found


def _check_models(workspace, datasets: dict[tuple[str, int], str], problems: list[str]) -> None:
    from mlpipe.graph import INPUT
    from mlpipe.store.models import CHAMPION, PENDING_CHAMPION, list_models, load_model

    champions = defaultdict(list)
    for model in list_models(workspace):
        name = model["name"]
        if model["versions"] != list(range(1, len(model["versions"]) + 1)):
            problems.append(f"model {name}: versions {model['versions']} are not 1..n")
        complete = set()
        for v in model["versions"]:
            ref = f"{name}:{v}"
            try:
                loaded = load_model(workspace, ref)
            except MlpipeError as e:
                problems.append(f"model {ref}: {e}")
                continue
            tags = loaded.info["tags"]
            missing = [t for t in REQUIRED_TAGS if t not in tags]
            if missing:
                problems.append(f"model {ref}: missing tags {', '.join(missing)}")
                continue
            for role in ("train", "test"):
                key = (tags[f"dataset.{role}.name"], int(tags[f"dataset.{role}.version"]))
                if datasets.get(key) != tags[f"dataset.{role}.digest"]:
                    problems.append(f"model {ref}: its {role} dataset {key[0]}:{key[1]} is not registered "
                                    f"with digest {tags[f'dataset.{role}.digest'][:12]}…")
            try:
                import onnxruntime as ort

                session = ort.InferenceSession(loaded.onnx, providers=["CPUExecutionProvider"])
                if [i.name for i in session.get_inputs()] != [INPUT]:
                    problems.append(f"model {ref}: ONNX input is not {INPUT!r}")
            except Exception as e:  # onnxruntime raises its own types for an invalid graph
                problems.append(f"model {ref}: ONNX graph does not load: {e}")
                continue
            complete.add(v)
        for alias, v in model["aliases"].items():
            if v not in complete:
                problems.append(f"model {name}@{alias}: points to version {v}, which is not complete")
        if CHAMPION in model["aliases"]:
            champions[name.rsplit("-", 1)[0]].append(name)
        rm = workspace.client.get_registered_model(name)
        pending = (rm.tags or {}).get(PENDING_CHAMPION)
        if pending is not None and int(pending) not in complete:
            problems.append(f"model {name}: a champion move to version {pending}, which is not complete")
    for prefix, names in champions.items():
        if len(names) > 1:
            problems.append(f"prefix {prefix}: {len(names)} models hold {CHAMPION}: {', '.join(names)}")
