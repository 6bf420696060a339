"""Reference checks for a manifest with structural errors, run on the parts that did validate.

"Every error at once" means a type error in one quota must not hide a duplicate key id elsewhere. The
document is copied with every list item that holds an error left out, validated again and checked;
findings are reported at the paths of the original document. A finding about a reference to another object
is left out (the referenced object may be one of those skipped; see checks.CrossReference), and so is
everything when an error lies outside every list item (e.g. a missing `deployment`)."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from quotagate.manifest.checks import CrossReference, Finding, check_references
from quotagate.manifest.paths import Loc, format_path, parse_path
from quotagate.manifest.schema import Manifest

# For each list the pruning shortened (by its location in the original document): the original indices kept.
Kept = dict[Loc, list[int]]

_FIRST_AT = re.compile(r"\(first at ([^)]+)\)")


def references_of_valid_parts(data: dict[str, Any], errors: Sequence[ErrorDetails]) -> list[Finding]:
    pruned = _prune(data, errors)
    if pruned is None:
        return []
    doc, kept = pruned
    try:
        manifest = Manifest.model_validate(doc)
    except ValidationError:
        return []  # what is left still does not validate (e.g. a required list became empty)
    out: list[Finding] = []
    for finding in check_references(manifest):
        if not isinstance(finding, CrossReference):
            path, message = finding
            message = _FIRST_AT.sub(lambda m: f"(first at {_original_path(m[1], kept)})", message)
            out.append((_original_path(path, kept), message))
    return out


def _prune(data: dict[str, Any], errors: Sequence[ErrorDetails]) -> tuple[dict[str, Any], Kept] | None:
    """A copy of `data` without the list items that hold errors; None when an error lies outside every item.

    A whole item goes, not just its bad field: without its misspelt `monthly_spend_limt` a quota would get
    "needs a limit" on top of "unknown field"."""
    doc = copy.deepcopy(data)
    skipped: dict[Loc, set[int]] = {}
    for err in errors:
        item = _innermost_item(doc, tuple(err["loc"]))
        if item is None:
            return None
        skipped.setdefault(item[0], set()).add(item[1])
    kept: Kept = {}
    # Deepest lists first: shortening a list never moves the lists nested in items still to be visited.
    for list_loc in sorted(skipped, key=len, reverse=True):
        items = _container_at(doc, list_loc)
        if not isinstance(items, list):
            continue  # inside an item already skipped
        kept[list_loc] = [i for i in range(len(items)) if i not in skipped[list_loc]]
        items[:] = [items[i] for i in kept[list_loc]]
    return doc, kept


def _container_at(doc: Any, loc: Loc) -> Any:
    node = doc
    for part in loc:
        if not _has(node, part):
            return None
        node = node[part]
    return node


def _has(node: Any, part: int | str) -> bool:
    if isinstance(node, list):
        return isinstance(part, int) and 0 <= part < len(node)
    return isinstance(node, dict) and part in node


def _innermost_item(doc: Any, loc: Loc) -> tuple[Loc, int] | None:
    """(location of the list, index) of the deepest list item on the way to `loc`."""
    node, found = doc, None
    for depth, part in enumerate(loc):
        if not _has(node, part):
            break  # e.g. a union member's name in the location: the item found so far holds the error
        if isinstance(node, list):
            found = (loc[:depth], int(part))
        node = node[part]
    return found


def _original_path(path: str, kept: Kept) -> str:
    loc: list[int | str] = []
    for part in parse_path(path):
        if isinstance(part, int):
            indices = kept.get(tuple(loc))
            loc.append(indices[part] if indices is not None and part < len(indices) else part)
        else:
            loc.append(part)
    return format_path(tuple(loc))
