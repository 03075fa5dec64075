"""The generic TOML → frozen dataclass loader (tracker.config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tracker.config import config_to_dict, load_config
from tracker.errors import ConfigError, Face3dError


@dataclass(frozen=True)
class Inner:
    rate: float = 1.5
    count: int = 3

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0, got {self.rate}")


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = Inner()
    other: Inner = field(default_factory=lambda: Inner(rate=2.0))
    mode: Literal["fast", "slow"] = "fast"
    enabled: bool = True
    size: tuple[int, int] = (224, 224)
    scales: tuple[float, ...] = (1.0,)
    out: Path = Path("out")
    limit: float | None = None


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    return p


def test_file_with_nested_tables_and_defaults(tmp_path):
    p = write(tmp_path, 'name = "a"\nsize = [128, 96]\nscales = [1, 0.5]\nout = "x/y"\n'
                        'limit = 3\n[inner]\nrate = 2\n[other]\ncount = 7\n')
    cfg = load_config(Outer, p)
    assert cfg == Outer(name="a", inner=Inner(rate=2.0, count=3), other=Inner(rate=2.0, count=7),
                        size=(128, 96), scales=(1.0, 0.5), out=Path("x/y"), limit=3.0)
    assert isinstance(cfg.inner.rate, float) and isinstance(cfg.limit, float)  # int → float
    assert load_config(Outer, {"name": "b"}) == Outer(name="b")


def test_round_trip_through_plain_values():
    cfg = Outer(name="c", inner=Inner(0.25, 9), mode="slow", enabled=False, scales=(2.0, 3.0),
                out=Path("/tmp/z"), limit=0.5)
    d = config_to_dict(cfg)
    assert d["inner"] == {"rate": 0.25, "count": 9} and d["scales"] == [2.0, 3.0]
    assert d["out"] == "/tmp/z"
    assert load_config(Outer, d) == cfg


@pytest.mark.parametrize("text, key", [
    ('name = "a"\ncolour = 1\n', "'colour'"),
    ('name = "a"\n[inner]\nrat = 1.0\n', "'inner.rat'"),
    ('name = "a"\n[extra]\nx = 1\n', "'extra'"),
])
def test_unknown_keys_name_the_key_and_the_file(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p)
    assert key in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("data, key", [
    ({"name": 3}, "'name'"),
    ({"name": "a", "enabled": 1}, "'enabled'"),
    ({"name": "a", "inner": {"count": 2.5}}, "'inner.count'"),
    ({"name": "a", "inner": {"count": True}}, "'inner.count'"),
    ({"name": "a", "inner": {"rate": True}}, "'inner.rate'"),
    ({"name": "a", "inner": {"rate": "1.0"}}, "'inner.rate'"),
    ({"name": "a", "inner": 5}, "'inner'"),
    ({"name": "a", "mode": "medium"}, "'mode'"),
    ({"name": "a", "size": [1, 2, 3]}, "'size'"),
    ({"name": "a", "size": 224}, "'size'"),
    ({"name": "a", "scales": [1.0, "x"]}, "'scales[1]'"),
    ({"name": "a", "out": 5}, "'out'"),
    ({"name": "a", "limit": "none"}, "'limit'"),
    ({}, "'name'"),
])
def test_wrong_types_and_missing_required_keys(data, key):
    with pytest.raises(ConfigError, match="<mapping>") as e:
        load_config(Outer, data)
    assert key in str(e.value)


def test_dataclass_validation_becomes_config_error(tmp_path):
    p = write(tmp_path, 'name = "a"\n[other]\nrate = -1.0\n')
    with pytest.raises(ConfigError, match=r"cfg\.toml.*\[other\].*rate must be >= 0"):
        load_config(Outer, p)


def test_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"cfg\.toml: invalid TOML"):
        load_config(Outer, write(tmp_path, "name = \n"))
    assert issubclass(ConfigError, Face3dError) and issubclass(ConfigError, ValueError)


def test_programming_errors_are_type_errors():
    with pytest.raises(TypeError):
        load_config(dict, {})

    @dataclass(frozen=True)
    class Bad:
        x: set[int] = frozenset()

    with pytest.raises(TypeError, match="unsupported"):
        load_config(Bad, {"x": [1]})


@dataclass(frozen=True)
class NoDefaults:
    a: float
    b: float


@dataclass(frozen=True)
class Holder:
    x: NoDefaults = NoDefaults(1.0, 2.0)


def test_partial_nested_table_merges_over_the_field_default():
    assert load_config(Holder, {"x": {"b": 5}}) == Holder(NoDefaults(1.0, 5.0))
    assert load_config(Holder, {}) == Holder()
