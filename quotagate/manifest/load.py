"""Reading a manifest file: YAML or JSON, numbers kept exact, every problem reported with its path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from quotagate.errors import ConfigError
from quotagate.manifest.checks import check_references
from quotagate.manifest.schema import Manifest

MAX_MANIFEST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # e.g. organizations[0].projects[0].clients[0].api_keys[1].key_id
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestError(ConfigError):
    """The manifest is invalid; ``problems`` lists every error found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} error(s)\n{lines}")


def format_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _ExactLoader(yaml.SafeLoader):
    """YAML floats become Decimals built from their source text, so 0.075 stays exactly 0.075."""


def _decimal_constructor(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    text = str(loader.construct_scalar(node)).replace("_", "")  # type: ignore[arg-type]
    value = Decimal(text) if text.lower().lstrip("+-") not in {".inf", ".nan"} else Decimal("NaN")
    if not value.is_finite():
        raise yaml.constructor.ConstructorError(None, None, f"not a finite number: {text}", node.start_mark)
    return value


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _decimal_constructor)
# Keys like `on`/`yes` stay strings and timestamps stay text for pydantic: drop YAML 1.1 implicit
# booleans-from-words and dates by re-registering only the resolvers we want would be invasive; the
# schema's strict types reject what slips through instead.


def parse_document(text: str, source: str) -> Any:
    """JSON when the document starts with '{', YAML otherwise (YAML is a superset, but JSON errors read better)."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise ManifestError(
                source, [Problem("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")]
            ) from exc
    try:
        return yaml.load(text, Loader=_ExactLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(source, [Problem("", f"invalid YAML{where}: {problem}")]) from exc


def validate_document(data: Any, source: str = "<manifest>") -> Manifest:
    """A Manifest from parsed data, or ManifestError listing every structural or reference problem."""
    if not isinstance(data, dict):
        raise ManifestError(source, [Problem("", "the manifest must be a mapping with a 'deployment' key")])
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        problems = [Problem(format_path(err["loc"]), _message(err)) for err in exc.errors()]
        raise ManifestError(source, problems) from None
    problems = [Problem(path, message) for path, message in check_references(manifest)]
    if problems:
        raise ManifestError(source, problems)
    return manifest


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def load_text(text: str, source: str = "<manifest>") -> Manifest:
    return validate_document(parse_document(text, source), source)


def load_file(path: str | Path) -> Manifest:
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {file}: {exc.strerror}") from exc
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(str(file), [Problem("", f"file is larger than {MAX_MANIFEST_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(str(file), [Problem("", f"not UTF-8 text (byte {exc.start})")]) from exc
    return load_text(text, str(file))
