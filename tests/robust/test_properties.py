"""Property tests: whatever bytes come as the data file and whatever TOML document comes as the config,
``mlpipe run`` answers with exit 0 or 2 -- never 1, never a traceback."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CORPUS = Path(__file__).resolve().parents[1] / "bad_inputs"
BASE = tomllib.loads((CORPUS / "base.toml").read_text())
HEADER = (CORPUS / "files" / "good.csv").read_text().splitlines()[0].encode()
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _assert_clean(r) -> None:
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.code in (0, 2), f"exit {r.code}: {r.stderr[-3000:]}"
    if r.code == 2:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr


csv_bytes = st.one_of(
    st.binary(max_size=2000),
    st.builds(lambda rows: HEADER + b"\n" + rows, st.binary(max_size=2000)),  # a real header, random rows
    st.builds(lambda lines: b"\n".join([HEADER] + lines),
              st.lists(st.text(alphabet="0123456789.,-:eE+ TZnaif\"", max_size=80).map(str.encode), max_size=40)),
)


@SETTINGS
@given(data=csv_bytes)
def test_random_bytes_as_the_data_file(fork_server, tmp_path, data):
    path = tmp_path / "random.csv"
    path.write_bytes(data)
    r = fork_server.run("run", "--config", str(CORPUS / "base.toml"), "--source", str(path), "--quiet",
                        "--workspace", str(tmp_path / "ws"))
    _assert_clean(r)


# -- random TOML documents: mutations of the valid config (deep paths), and documents from nothing ------------
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # TOML strings hold no surrogates
scalars = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    text)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(text.filter(bool), inner,
                                                                       max_size=3)), max_leaves=8)


def _paths(d: dict, prefix=()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out += _paths(v, prefix + (k,))
    return out


PATHS = _paths(BASE) + [("models", "svm", "params"), ("models", "random_forest", "space"), ("tracking",),
                        ("datasets",), ("tracking", "uri")]


@st.composite
def configs(draw) -> dict:
    if draw(st.booleans()):
        return draw(st.dictionaries(text.filter(bool), values, max_size=5))
    doc = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = doc
        for key in path[:-1]:
            parent = parent.setdefault(key, {}) if isinstance(parent, dict) else {}
        if not isinstance(parent, dict):
            continue
        if draw(st.integers(0, 4)) == 0:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(values)
    return doc


def _toml(doc: dict) -> str:
    """A small TOML writer (inline tables for nested values), enough for generated documents."""
    return "\n".join(f"{_key(k)} = {_value(v)}" for k, v in doc.items()) + "\n"


def _key(k: str) -> str:
    return _string(k)


def _string(v: str) -> str:
    """A TOML basic string: JSON's escapes, less its surrogate pairs (TOML takes such characters raw)."""
    return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"


@SETTINGS
@given(doc=configs())
def test_random_toml_documents_as_the_config(fork_server, tmp_path, doc):
    text = _toml(doc)
    assert tomllib.loads(text) == doc or any(isinstance(x, float) and math.isnan(x) for x in _leaves(doc))
    path = tmp_path / "random.toml"
    path.write_text(text.replace('"files/good.csv"', json.dumps(str(CORPUS / "files" / "good.csv"))))
    r = fork_server.run("run", "--config", str(path), "--quiet", "--workspace", str(tmp_path / "ws"))
    _assert_clean(r)


def _leaves(v):
    if isinstance(v, dict):
        for x in v.values():
            yield from _leaves(x)
    elif isinstance(v, list):
        for x in v:
            yield from _leaves(x)
    else:
        yield v
