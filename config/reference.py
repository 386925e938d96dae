"""Render every config key, its default and its description as Markdown (docs/configuration.md).

python -m config.reference > docs/configuration.md      (or: make docs)
"""

from __future__ import annotations

import enum
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from config.schema import EMSConfig

__all__ = ["render_markdown"]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"list[{', '.join(_type_name(a) for a in args)}]"
    if origin is dict:
        k, v = typing.get_args(annotation)
        return f"map[{_type_name(k)}, {_type_name(v)}]"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(str(m.value) for m in annotation)
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is PydanticUndefined:
        if field.default_factory is None:
            return "(required)"
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(str(v.value if isinstance(v, enum.Enum) else v) for v in value) + "]`"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        path = f"{prefix}{name}"
        nested = _models_in(field.annotation)
        is_list = typing.get_origin(field.annotation) in (list, tuple) or any(
            typing.get_origin(a) in (list, tuple) for a in typing.get_args(field.annotation)
        )
        if nested and not (len(nested) == 1 and nested[0].__name__ == "SecretRef"):
            if is_list:
                yield path, "list", _default(field), field.description or ""
            for sub in nested:
                yield from _rows(sub, f"{path}[]." if is_list else f"{path}.")
            continue
        type_name = "secret: {env: NAME} \\| {file: PATH}" if nested else _type_name(field.annotation)
        yield path, type_name, _default(field), (field.description or "").replace("|", "\\|")


def render_markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the models in `config/` by `python -m config.reference > docs/configuration.md`",
        "(`make docs`); a unit test fails when this file and the code disagree. See `config/ems.example.yaml`.",
        "",
        "- One YAML file; every key is optional and has the default shown. Unknown keys are errors.",
        "- Environment overrides: `EMS_<SECTION>__<KEY>=value` (nested keys joined by `__`, value parsed as YAML),",
        "  e.g. `EMS_CONTROL__SOC_MIN_PCT=15`. Variables without `__` are not overrides.",
        "- Secrets (tokens, passwords, keys) only as `{env: NAME}` or `{file: PATH}`, never inline.",
        "- A bad file stops the process with exit status 2 and one line per problem: `key.path: reason`.",
        "  Check a file without starting: `python main.py --config FILE --check-config`.",
        "",
    ]
    section = None
    for path, type_name, default, doc in _rows(EMSConfig, ""):
        top = path.split(".")[0]
        if top != section:
            section = top
            lines += ["", f"## `{top}`", "", "| key | type | default | description |", "|---|---|---|---|"]
        lines.append(f"| `{path}` | {type_name} | {default} | {doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
