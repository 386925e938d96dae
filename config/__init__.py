"""Load the one YAML config file, apply `EMS_…` overrides, validate, resolve secrets.

Called once by `main.py` (and by `emsctl config check`); everything else receives the
typed, frozen `EMSConfig`. Every problem becomes one `ConfigProblem` naming the dotted
key path and the reason; the caller prints them and exits with status 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from config.common import SecretRef
from config.schema import EMSConfig

__all__ = ["ENV_PREFIX", "ConfigError", "ConfigProblem", "EMSConfig", "load_config", "parse_config"]

ENV_PREFIX = "EMS_"
_KEY_IN_MSG = re.compile(r"^([a-z_][a-z0-9_.]*): (.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class ConfigError(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> EMSConfig:
    """Read `path`, apply environment overrides and validate. Raises ConfigError."""
    env = dict(os.environ if environ is None else environ)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read config file {p}: {exc.strerror or exc}")]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem("", f"{p}: invalid YAML{where}: {problem}")]) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([ConfigProblem("", f"{p}: the top level must be a mapping of sections, got {type(raw).__name__}")])
    return parse_config(raw, env)


def parse_config(raw: dict[str, Any], environ: Mapping[str, str]) -> EMSConfig:
    merged, problems = _apply_env(raw, environ)
    if problems:
        raise ConfigError(problems)
    try:
        cfg = EMSConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_every_problem(merged, exc, environ)) from exc
    resolved, problems = _resolve_secrets(cfg, environ, ())
    if problems:
        raise ConfigError(problems)
    assert isinstance(resolved, EMSConfig)
    return resolved


_HIDDEN_ROUNDS = 4


def _every_problem(merged: dict[str, Any], exc: ValidationError, environ: Mapping[str, str]) -> list[ConfigProblem]:
    """Every problem at once. Pydantic runs a model's cross-checks (its model validators) only once its
    fields are valid, and the root's (sections against each other) only once every section is, and the
    secrets are resolved only after that: each fix would reveal the next problem. So validate again
    without the values found bad (each key falls back to its default) until nothing new appears; a
    problem found that way which names a removed key is left out (it may be the default's, not the
    file's)."""
    problems = [_problem(err) for err in exc.errors()]
    seen = {str(p) for p in problems}
    removed: set[str] = set()
    data, errors = merged, exc.errors()
    for _ in range(_HIDDEN_ROUNDS):
        data, gone = _without_bad_values(data, errors)
        if not gone:
            break
        removed |= gone
        try:
            cfg = EMSConfig.model_validate(data)
        except ValidationError as again:
            errors, found = again.errors(), [_problem(err) for err in again.errors()]
        else:
            errors, found = [], _resolve_secrets(cfg, environ, ())[1]
        for p in found:
            if str(p) not in seen and not _names_removed(p, removed):
                seen.add(str(p))
                problems.append(p)
        if not errors:
            break
    for p in _raw_secret_problems(merged, environ, ()):  # cross-checks that still fail hid the secrets
        if str(p) not in seen:
            seen.add(str(p))
            problems.append(p)
    return problems


def _raw_secret_problems(node: Any, environ: Mapping[str, str], path: tuple[str, ...]) -> list[ConfigProblem]:
    """Secret references ({env: NAME} or {file: PATH}) anywhere in the raw config that do not resolve."""
    if isinstance(node, list | tuple):
        return [p for i, v in enumerate(node) for p in _raw_secret_problems(v, environ, (*path, str(i)))]
    if not isinstance(node, dict):
        return []
    if node and set(node) <= {"env", "file"}:
        try:
            SecretRef.model_validate(node).resolve(dict(environ))
        except (ValidationError, ValueError) as exc:
            return [] if isinstance(exc, ValidationError) else [ConfigProblem(".".join(path), str(exc))]
        return []
    return [p for k, v in node.items() for p in _raw_secret_problems(v, environ, (*path, str(k)))]


def _without_bad_values(data: dict[str, Any], errors: list[Any]) -> tuple[dict[str, Any], set[str]]:
    """A copy of `data` without the values the errors point at (a whole list when the error is inside
    one); returns it and the dotted keys removed. Sections (mappings) are never removed: an error on a
    section is its own cross-check."""
    out = _deep_copy(data)
    gone: set[str] = set()
    for err in errors:
        node: Any = out
        path: list[str] = []
        for part in err["loc"]:
            if isinstance(node, dict) and part in node:
                child = node[part]
                path.append(str(part))
                if isinstance(child, list | tuple):
                    del node[part]  # an element's error: drop the list, its default applies
                    gone.add(".".join(path))
                    break
                if not isinstance(child, dict):
                    del node[part]
                    gone.add(".".join(path))
                    break
                node = child
            else:
                break  # a missing key, or a path pydantic made up (a union member): nothing to drop
    return out, gone


def _names_removed(p: ConfigProblem, removed: set[str]) -> bool:
    for key in removed:
        leaf = key.rsplit(".", 1)[-1]
        if p.path == key or p.path.startswith(key + ".") or re.search(rf"\b{re.escape(leaf)}\b", p.reason):
            return True
    return False


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """`EMS_CONTROL__SOC_MIN_PCT=15` sets `control.soc_min_pct`. Variables without `__` are left alone
    (they may hold secrets referenced by `{env: NAME}`). Values are parsed as YAML scalars/lists."""
    merged: dict[str, Any] = _deep_copy(raw)
    problems: list[ConfigProblem] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        if any(not k for k in keys):
            problems.append(ConfigProblem(name, "empty key segment in environment override"))
            continue
        try:
            value = yaml.safe_load(environ[name])
        except yaml.YAMLError:
            value = environ[name]
        node = merged
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                problems.append(ConfigProblem(".".join(keys), f"{name} overrides inside a key that is not a section"))
                break
            node = child
        else:
            node[keys[-1]] = value
    return merged, problems


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def _problem(err: Mapping[str, Any]) -> ConfigProblem:
    path = ".".join(str(part) for part in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    m = _KEY_IN_MSG.match(msg)
    if m:  # a model validator naming the key it is about: "soc_min_pct: must be < ..."
        path, msg = (f"{path}.{m.group(1)}" if path else m.group(1)), m.group(2)
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see config/ems.example.yaml)"
    elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict | list):
        msg = f"{msg} (got {err['input']!r})"
    return ConfigProblem(path, msg)


def _resolve_secrets(model: BaseModel, environ: Mapping[str, str], path: tuple[str, ...]) -> tuple[BaseModel, list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        sub = (*path, name)
        if isinstance(value, SecretRef):
            try:
                updates[name] = value.resolve(dict(environ))
            except ValueError as exc:
                problems.append(ConfigProblem(".".join(sub), str(exc)))
        elif isinstance(value, BaseModel):
            new, sub_problems = _resolve_secrets(value, environ, sub)
            problems += sub_problems
            if new is not value:
                updates[name] = new
        elif isinstance(value, tuple | list) and any(isinstance(v, BaseModel) for v in value):
            items = []
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    new, sub_problems = _resolve_secrets(item, environ, (*sub, str(i)))
                    problems += sub_problems
                    items.append(new)
                else:
                    items.append(item)
            updates[name] = type(value)(items)
    return (model.model_copy(update=updates) if updates else model), problems
