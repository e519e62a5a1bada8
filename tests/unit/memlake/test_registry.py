import pytest

from memlake.core.errors import MemlakeError
from memlake.core.registry import Registry


def test_registry_names_gets_and_refuses():
    r: Registry[int] = Registry("widget")

    @r.register("b")
    def b():
        return 2

    r.add("a", 1)
    assert r.names() == ["a", "b"] and list(r) == ["a", "b"] and len(r) == 2
    assert r.get("a") == 1 and r["b"] is b and "a" in r and "c" not in r
    with pytest.raises(MemlakeError, match=r"unknown widget 'c' \(choose from a, b\)"):
        r.get("c")
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        r.add("a", 3)
