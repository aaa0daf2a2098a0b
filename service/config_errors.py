"""Configuration errors in an operator's words: each names the key it is about.

pydantic reports a location such as ``('sms', 'gateways', 0, 'secret_env')`` and a
message for programmers; this turns it into ``sms.gateways[0].secret_env: ...``, names
the close match of an unknown key, tells a list of tables from a table, and never
echoes a value that may be a secret pasted in the wrong place.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from contract.schema import Problems, join_key


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` names each bad key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, directly or as list items; None for plain values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        model = _item_model(arg)
        if model is not None:
            return model
    return None


def _is_list_of_tables(model: type[BaseModel] | None, key: str) -> bool:
    if model is None or key not in model.model_fields:
        return False
    annotation = model.model_fields[key].annotation
    return typing.get_origin(annotation) is list and _item_model(annotation) is not None


def _locate(root: type[BaseModel], loc: tuple) -> tuple[str, type[BaseModel] | None, type[BaseModel] | None]:
    """The key path for a pydantic error location, the model at it, and the model holding its last key."""
    model: type[BaseModel] | None = root
    parent: type[BaseModel] | None = None
    path = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif model is not None and part in model.model_fields:
            path = join_key(path, part)
            parent, model = model, _item_model(model.model_fields[part].annotation)
        elif model is not None and index == len(loc) - 1:
            path = join_key(path, str(part))  # an unknown key
            parent, model = model, None
        # else: a tag pydantic adds inside a type (a union member, a validator); not a key
    return path, model, parent


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problems_for(root: type[BaseModel], detail: Mapping) -> list[str]:
    path, _, parent = _locate(root, tuple(detail["loc"]))
    key = path.rsplit(".", 1)[-1]
    kind = detail["type"]
    error = (detail.get("ctx") or {}).get("error")
    if isinstance(error, Problems):
        return [f"{join_key(path, sub)}: {message}" if join_key(path, sub) else message for sub, message in error.problems]
    if kind in ("value_error", "assertion_error"):
        message = str(error) if error is not None else detail["msg"]
    elif kind == "extra_forbidden":
        message = "unknown key"
        if parent is not None:
            close = difflib.get_close_matches(key, list(parent.model_fields), n=1, cutoff=0.6)
            if close:
                message += f" (did you mean {close[0]!r}?)"
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"must be a table, got {_show(detail['input'])}"
    elif kind == "list_type" and _is_list_of_tables(parent, re.sub(r"\[\d+\]$", "", key)):
        message = f"must be a list of tables: write [[{path}]] once for each entry"
    else:
        message = detail["msg"].replace("Input should be", "must be", 1).replace("String should", "must", 1)
        message = message.replace("List should", "must", 1).replace("Value should", "must", 1)
        if not key.endswith("_env"):  # never echo what may be a secret pasted in the wrong place
            message += f" (got {_show(detail['input'])})"
    return [f"{path}: {message}" if path else message]


def validation_problems(root: type[BaseModel], error: ValidationError) -> list[str]:
    """Every problem pydantic found, each as "key.path: what is wrong", in words an operator reads."""
    problems: list[str] = []
    for detail in error.errors():
        for problem in _problems_for(root, detail):
            if problem not in problems:
                problems.append(problem)
    return problems
