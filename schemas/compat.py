"""JSON Schema snapshots of every event, and the compatibility rule that guards them.

Regenerate after an allowed change (a new field with a default): `python -m schemas.compat --write`.
`incompatibilities(old, new)` lists what breaks consumers: a removed field, a retyped field, or a new
required field (one without a default).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.events import EVENT_TYPES

SNAPSHOT_DIR = Path(__file__).parent / "snapshots"


def current_schemas() -> dict[str, dict[str, Any]]:
    return {name: cls.model_json_schema() for name, cls in sorted(EVENT_TYPES.items())}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return dict(root.get("$defs", {}).get(name, {}))
    return schema


def _type_sig(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A comparable signature of a property's type (ignores titles, descriptions, defaults)."""
    s = _resolve(schema, root)
    if "anyOf" in s:
        return ("anyOf", tuple(sorted(repr(_type_sig(x, root)) for x in s["anyOf"])))
    if "enum" in s:
        return ("enum", tuple(sorted(map(str, s["enum"]))))
    if "const" in s:
        return ("const", s["const"])
    t = s.get("type")
    if t == "array":
        return ("array", _type_sig(s.get("items", {}), root))
    if t == "object" and "properties" in s:
        return ("object", tuple(sorted((k, repr(_type_sig(v, root))) for k, v in s["properties"].items())))
    if t == "object":
        return ("map", _type_sig(s.get("additionalProperties", {}), root))
    return (t, s.get("format"))


def incompatibilities(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    problems: list[str] = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_req, new_req = set(old.get("required", [])), set(new.get("required", []))
    for name, osch in old_props.items():
        if name not in new_props:
            problems.append(f"{path}{name}: removed")
            continue
        nsch = new_props[name]
        o_res, n_res = _resolve(osch, old), _resolve(nsch, new)
        if o_res.get("type") == "array" and n_res.get("type") == "array":   # a list of models: its items'
            o_res, n_res = _resolve(o_res.get("items", {}), old), _resolve(n_res.get("items", {}), new)
            name += "[]"
        if "properties" in o_res and "properties" in n_res:
            sub_old = {**o_res, "$defs": old.get("$defs", {})}
            sub_new = {**n_res, "$defs": new.get("$defs", {})}
            problems += incompatibilities(sub_old, sub_new, f"{path}{name}.")
        elif _type_sig(osch, old) != _type_sig(nsch, new):
            problems.append(f"{path}{name}: type changed")
    for name in sorted(new_req - old_req):
        problems.append(f"{path}{name}: new field without a default" if name not in old_props
                        else f"{path}{name}: became required")
    return problems


def write_snapshots() -> None:
    SNAPSHOT_DIR.mkdir(exist_ok=True)
    for name, sch in current_schemas().items():
        (SNAPSHOT_DIR / f"{name}.json").write_text(json.dumps(sch, indent=2, sort_keys=True) + "\n")


def check_snapshots() -> list[str]:
    problems: list[str] = []
    current = current_schemas()
    for name, sch in current.items():
        f = SNAPSHOT_DIR / f"{name}.json"
        if not f.exists():
            problems.append(f"{name}: no committed snapshot (run python -m schemas.compat --write)")
            continue
        problems += [f"{name}.{p}" for p in incompatibilities(json.loads(f.read_text()), sch)]
    for f in SNAPSHOT_DIR.glob("*.json"):
        if f.stem not in current:
            problems.append(f"{f.stem}: event type removed")
    return problems


if __name__ == "__main__":
    if "--write" in sys.argv:
        bad = [p for p in check_snapshots() if "no committed snapshot" not in p]
        if bad and "--force" not in sys.argv:
            print("refusing to overwrite: incompatible changes (bump the topic version or use --force):")
            print("\n".join(bad))
            sys.exit(1)
        write_snapshots()
        print(f"wrote {len(current_schemas())} snapshots to {SNAPSHOT_DIR}")
    else:
        bad = check_snapshots()
        print("\n".join(bad) or "compatible")
        sys.exit(1 if bad else 0)
