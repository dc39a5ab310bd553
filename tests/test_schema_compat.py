"""The committed JSON Schema snapshots guard the v1 topics: only additive changes with defaults."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas.compat import check_snapshots, incompatibilities


def schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


class V1(BaseModel):
    a: int
    b: str = "x"


class AddedWithDefault(BaseModel):
    a: int
    b: str = "x"
    c: float | None = None


class AddedRequired(BaseModel):
    a: int
    b: str = "x"
    c: float


class Removed(BaseModel):
    a: int


class Retyped(BaseModel):
    a: str
    b: str = "x"


class Nested(BaseModel):
    inner: V1


class NestedRetyped(BaseModel):
    inner: Retyped


def test_committed_snapshots_match_the_models() -> None:
    assert check_snapshots() == []


def test_adding_a_field_with_a_default_is_compatible() -> None:
    assert incompatibilities(schema(V1), schema(AddedWithDefault)) == []


def test_incompatible_changes_are_named() -> None:
    assert incompatibilities(schema(V1), schema(AddedRequired)) == ["c: new field without a default"]
    assert incompatibilities(schema(V1), schema(Removed)) == ["b: removed"]
    assert incompatibilities(schema(V1), schema(Retyped)) == ["a: type changed"]
    assert incompatibilities(schema(Nested), schema(NestedRetyped)) == ["inner.a: type changed"]


class ListOfV1(BaseModel):
    items: list[V1]


class ListOfAdded(BaseModel):
    items: list[AddedWithDefault]


class ListOfRetyped(BaseModel):
    items: list[Retyped]


def test_a_list_of_models_may_gain_fields_with_defaults_but_not_retype_them() -> None:
    assert incompatibilities(schema(ListOfV1), schema(ListOfAdded)) == []
    assert incompatibilities(schema(ListOfV1), schema(ListOfRetyped)) == ["items[].a: type changed"]
