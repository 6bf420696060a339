"""Reading a manifest file: YAML or JSON, numbers kept exact, every problem reported with its path."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from quotagate.errors import ConfigError
from quotagate.manifest.checks import check_references
from quotagate.manifest.partial import references_of_valid_parts
from quotagate.manifest.paths import format_path as format_path  # re-exported: error handlers format locations
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


@dataclass(frozen=True, slots=True)
class Parsed:
    data: Any
    problems: list[Problem]  # found while parsing (duplicate keys), reported with the validation errors


def parse_document(text: str, source: str) -> Parsed:
    """JSON when the document starts with '{', YAML otherwise (YAML is a superset, but JSON errors read better).

    A key given twice in one mapping is a problem, not "the last one wins": a second `rpm_limit` must not
    silently replace the first. Syntax errors raise ManifestError at once (nothing else can be checked)."""
    try:
        return _parse_json(text, source) if text.lstrip().startswith("{") else _parse_yaml(text, source)
    except RecursionError:
        raise ManifestError(source, [Problem("", "the document is nested too deeply")]) from None


def _parse_json(text: str, source: str) -> Parsed:
    try:
        raw = json.loads(text, parse_float=Decimal, object_pairs_hook=_JsonObject, parse_constant=_NotFinite)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            source, [Problem("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")]
        ) from exc
    problems: list[Problem] = []
    return Parsed(_plain_json(raw, (), problems), problems)


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers which keys it saw more than once (the dict keeps the last value)."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        seen: set[str] = set()
        self.duplicates: list[str] = []
        for key, _ in pairs:
            if key in seen and key not in self.duplicates:
                self.duplicates.append(key)
            seen.add(key)


class _NotFinite:
    """JSON's NaN / Infinity: kept as a marker so the problem is reported with its path, never as a float."""

    def __init__(self, text: str) -> None:
        self.text = text


def _plain_json(value: Any, loc: tuple[int | str, ...], problems: list[Problem]) -> Any:
    """`value` as plain dicts and lists, with a problem for every duplicate key and non-finite number in it."""
    if isinstance(value, _JsonObject):
        problems.extend(Problem(format_path((*loc, key)), "duplicate key") for key in value.duplicates)
        return {key: _plain_json(item, (*loc, key), problems) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_json(item, (*loc, i), problems) for i, item in enumerate(value)]
    if isinstance(value, _NotFinite):
        problems.append(Problem(format_path(loc), f"not a finite number: {value.text}"))
        return None
    return value


def _parse_yaml(text: str, source: str) -> Parsed:
    loader: _ExactLoader | None = None
    try:
        loader = _ExactLoader(text)  # inside: the reader refuses control characters as it is built
        node = loader.get_single_node()
        problems = list(_yaml_duplicate_keys(node, (), set())) if node is not None else []
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(source, [Problem("", f"invalid YAML{where}: {problem}")]) from exc
    finally:
        if loader is not None:
            loader.dispose()
    return Parsed(data, problems)


def _yaml_duplicate_keys(node: yaml.Node, loc: tuple[int | str, ...], seen_nodes: set[int]) -> Iterator[Problem]:
    # An alias repeats a node: visit each node once (reports once, and a recursive alias cannot loop).
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a complex key: the schema rejects it
            key = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            if key in first_line:
                yield Problem(
                    format_path((*loc, key_node.value)), f"duplicate key (line {line}, first at line {first_line[key]})"
                )
            else:
                first_line[key] = line
            yield from _yaml_duplicate_keys(value_node, (*loc, key_node.value), seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _yaml_duplicate_keys(item, (*loc, i), seen_nodes)


def validate_document(data: Any, source: str = "<manifest>", problems: Sequence[Problem] = ()) -> Manifest:
    """A Manifest from parsed data, or ManifestError listing every problem: `problems` found while parsing,
    structural ones, and reference ones (also for the parts that validated when others did not)."""
    found = list(problems)
    if not isinstance(data, dict):
        raise ManifestError(source, [*found, Problem("", "the manifest must be a mapping with a 'deployment' key")])
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        parsed_paths = {p.path for p in problems}  # a NaN already reported is not also "not a number"
        found += [
            problem
            for problem in (Problem(format_path(err["loc"]), _message(err)) for err in errors)
            if problem.path not in parsed_paths
        ]
        found += [Problem(path, message) for path, message in references_of_valid_parts(data, errors)]
        raise ManifestError(source, found) from None
    found += [Problem(path, message) for path, message in check_references(manifest)]
    if found:
        raise ManifestError(source, found)
    return manifest


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def load_text(text: str, source: str = "<manifest>") -> Manifest:
    parsed = parse_document(text, source)
    return validate_document(parsed.data, source, parsed.problems)


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
