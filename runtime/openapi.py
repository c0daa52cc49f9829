"""The service's OpenAPI document in the two forms client generators ask for.

FastAPI writes OpenAPI 3.1 (its schemas are JSON Schema 2020-12). ``typed_openapi`` types the answers for
generators: the published answer schema (``GET /v1/schema``) becomes the components ``Answer`` and
``AnswerError`` that the 200 responses reference, and the optional bearer token is declared on every ``/v1/``
route. ``openapi_30`` renders that document as OpenAPI 3.0.3 for generators that read only 3.0 (older NSwag,
swagger-codegen 2, AutoRest): ``type: [T, "null"]`` and ``anyOf: [..., {"type": "null"}]`` become ``nullable``
(``type: "null"`` alone a nullable ``enum: [null]``), ``const`` a one-value ``enum``, ``examples`` one
``example``, an upload's ``contentMediaType`` ``format: binary``, numeric ``exclusiveMinimum``/``Maximum`` the
boolean form, and a ``$ref`` with siblings an ``allOf``. Both are checked with openapi-spec-validator in the
tests and checked in as ``docs/openapi.json`` and ``docs/openapi-3.0.json``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_30", "typed_openapi"]

OPENAPI_30 = "3.0.3"
_NULL = {"type": "null"}
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf")
_SCHEMA_ONE = ("items", "not", "additionalProperties")
_DROPPED = ("$schema", "$id", "$comment")


def typed_openapi(
    doc: dict[str, Any], schema_defs: dict[str, Any], untyped_answer: dict[str, Any]
) -> dict[str, Any]:
    """``doc`` with the answer typed: ``schema_defs`` (the answer schema's ``$defs``) gives the components
    ``Answer`` and ``AnswerError``; a 200 JSON response whose schema is ``untyped_answer`` (or an array of
    it) references ``Answer``; every ``/v1/`` route may send the bearer token (``--token-file``)."""
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update(
        {"Answer": schema_defs["answer"], "AnswerError": schema_defs["error"]}
    )
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "required when the server runs with --token-file; other servers ignore it",
        }
    }
    ref = {"$ref": "#/components/schemas/Answer"}
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            if path.startswith("/v1/"):
                op["security"] = [{"bearer": []}, {}]
            ok = op.get("responses", {}).get("200", {}).get("content", {}).get("application/json")
            if ok is not None and ok.get("schema") == {"type": "array", "items": untyped_answer}:
                ok["schema"] = {"type": "array", "items": ref}
            elif ok is not None and ok.get("schema") == untyped_answer:
                ok["schema"] = ref
    return doc


def openapi_30(doc: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.1 document (as FastAPI writes it) rendered as OpenAPI 3.0.3 (module docstring).

    Raises:
        ValueError: a schema construct 3.0 cannot say (``prefixItems``, ``if``/``then``), named with its
            place in the document.
    """
    out: dict[str, Any] = {**doc, "openapi": OPENAPI_30}
    out["paths"] = {
        path: {method: _operation(op, f"{method.upper()} {path}") for method, op in ops.items()}
        for path, ops in doc.get("paths", {}).items()
    }
    components = dict(doc.get("components", {}))
    if "schemas" in components:
        components["schemas"] = {
            name: _schema(s, f"components.schemas.{name}") for name, s in components["schemas"].items()
        }
    out["components"] = components
    return out


def _operation(op: dict[str, Any], where: str) -> dict[str, Any]:
    op = dict(op)
    if "parameters" in op:
        op["parameters"] = [
            {**p, "schema": _schema(p["schema"], where)} if "schema" in p else p for p in op["parameters"]
        ]
    if "requestBody" in op:
        op["requestBody"] = _with_content(op["requestBody"], where)
    if "responses" in op:
        op["responses"] = {code: _with_content(r, f"{where} {code}") for code, r in op["responses"].items()}
    return op


def _with_content(part: dict[str, Any], where: str) -> dict[str, Any]:
    if "content" not in part:
        return part
    return {
        **part,
        "content": {
            media: {**body, "schema": _schema(body["schema"], where)} if "schema" in body else body
            for media, body in part["content"].items()
        },
    }


def _schema(s: Any, where: str) -> Any:
    """One JSON Schema 2020-12 object as an OpenAPI 3.0 schema object."""
    if not isinstance(s, dict):
        return s
    out: dict[str, Any] = {}
    for key, value in s.items():
        if key in ("prefixItems", "if", "then", "else", "dependentSchemas", "unevaluatedProperties"):
            raise ValueError(f"{where}: {key!r} has no OpenAPI 3.0 form")
        if key in _DROPPED:
            continue
        if key in _SCHEMA_MAPS:
            out[key] = {name: _schema(sub, where) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS:  # a null alternative stays {"type": "null"} for the rule below
            out[key] = [sub if sub == _NULL else _schema(sub, where) for sub in value]
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = _schema(value, where)
        elif key == "const":
            out["enum"] = [value]
        elif key == "examples":
            if value:
                out["example"] = value[0]
        elif key == "contentMediaType":
            out["format"] = "binary"
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    types = out.get("type")
    if types == "null":  # a value that must be null
        del out["type"]
        out.update(nullable=True, enum=[None])
    elif isinstance(types, list):
        kinds = [t for t in types if t != "null"]
        if len(kinds) < len(types):
            out["nullable"] = True
        if len(kinds) == 1:
            out["type"] = kinds[0]
        else:
            del out["type"]
            out["anyOf"] = [{"type": t} for t in kinds]
    for key in ("anyOf", "oneOf"):
        if key in out and _NULL in out[key]:
            kinds = [sub for sub in out[key] if sub != _NULL]
            out["nullable"] = True
            del out[key]
            if len(kinds) == 1 and "$ref" not in kinds[0]:
                out = {**kinds[0], **out}
            elif len(kinds) == 1:
                out["allOf"] = kinds
            else:
                out[key] = kinds
    if "$ref" in out and len(out) > 1:  # 3.0 ignores whatever stands beside a $ref
        out["allOf"] = [{"$ref": out.pop("$ref")}, *out.get("allOf", [])]
    return out
