"""YAML configuration with dotted command-line overrides.

A run starts from a preset (`tiny`, `small`, `medium` in memlake/configs/) or a user YAML
file, then applies `key.sub=value` overrides. Only keys that exist in the base may be
overridden, so a typo is an error rather than a silently ignored setting, and the result is
checked against the typed schema in `settings.py`. The resolved config
is saved beside every output and recorded in every lake manifest.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from memlake.core import settings
from memlake.core.errors import MemlakeError

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load(source: str | Path = "small", overrides: list[str] | None = None) -> dict[str, Any]:
    """Load a preset name or a YAML path and apply `a.b=value` overrides."""
    path = Path(source)
    if not path.suffix:
        path = PRESETS_DIR / f"{source}.yaml"
        if not path.exists():
            raise MemlakeError(f"unknown config preset {source!r} (choose from {presets()})")
    if not path.exists():
        raise MemlakeError(f"config file not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MemlakeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise MemlakeError(f"{path}: top level must be a mapping")
    cfg = apply_overrides(cfg, overrides or [])
    # typed check of the whole config; stages keep the plain mapping it was checked on, so the
    # values (and the fingerprints of configs in manifests and caches) are exactly the YAML's
    settings.validate(cfg, str(path))
    return cfg


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise MemlakeError(f"override {item!r} must look like key.sub=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = cfg
        for k in keys[:-1]:
            if not isinstance(node, dict) or k not in node:
                raise MemlakeError(f"override {dotted!r}: no config key {k!r}")
            node = node[k]
        if not isinstance(node, dict) or keys[-1] not in node:
            raise MemlakeError(f"override {dotted!r}: no config key {keys[-1]!r}")
        node[keys[-1]] = yaml.safe_load(raw)
    return cfg


def fingerprint(cfg: Any) -> str:
    """Stable short hash of a config (or any JSON-able value)."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save(cfg: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
