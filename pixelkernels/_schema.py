"""The op schemas, from their one table: pixelkernels/schemas.def (SPEC §1).

csrc/ops.cpp #includes the table to define the C++ ops ``pixelkernels::<name>``; this module
reads the same file (package data, so it needs no extension) and defines each Triton variant
``pixelkernels::<name>_triton`` from it (``triton_variant``). Names, types and defaults are
written once; pixelkernels/_op.py checks at import that every registered variant carries the
table's schema (a stale extension fails loudly), tests/test_schemas.py that nothing else
defines a pixelkernels op.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from pathlib import Path

import torch

NAMESPACE = "pixelkernels"
TABLE = Path(__file__).with_name("schemas.def")

# PK_SCHEMA(name, "..." "...") with the schema as adjacent string literals (a schema holds no
# quote, backslash or `//`, so neither the literals nor the comment stripping need escapes).
_ENTRY = re.compile(r'PK_SCHEMA\(\s*(\w+)\s*,((?:\s*"[^"\\\n]*")+)\s*\)')


def parse(text: str, where: str = "schema table") -> dict[str, str]:
    """{name: "(arguments) -> returns"} of a PK_SCHEMA table, in its order. Anything the C++
    preprocessor would read differently (an entry this reads differently, a stray token) is an
    error, so the two sides cannot see two tables."""
    code = re.sub(r"//[^\n]*", "", text)
    schemas: dict[str, str] = {}
    for m in _ENTRY.finditer(code):
        name = m.group(1)
        if name in schemas:
            raise ValueError(f"{where}: {name} is defined twice")
        schemas[name] = "".join(re.findall(r'"([^"]*)"', m.group(2)))
    rest = _ENTRY.sub("", code).strip()
    if rest:
        raise ValueError(f"{where}: not a PK_SCHEMA(name, \"schema\") entry: {rest[:120]!r}")
    for name, tail in schemas.items():
        torch._C.parse_schema(name + tail)  # raises on a malformed schema
    return schemas


SCHEMAS: dict[str, str] = parse(TABLE.read_text(), str(TABLE))


def function_schema(name: str, suffix: str = "") -> torch._C.FunctionSchema:
    """The table's schema of op `name`, as registered for pixelkernels::<name><suffix>."""
    return torch._C.parse_schema(f"{NAMESPACE}::{name}{suffix}{SCHEMAS[name]}")


def expect_registered(name: str, packet, suffix: str = "") -> None:
    """Raise unless the registered op `packet` (torch.ops.<ns>.<name><suffix>) has the table's
    schema: argument names, types, defaults and returns."""
    got = str(packet.default._schema).split("::", 1)[1]
    want = str(function_schema(name, suffix)).split("::", 1)[1]
    if got != want:
        hint = "" if suffix else " (the compiled extension is stale: rebuild it, e.g. `make build`)"
        raise RuntimeError(
            f"{packet.default.name()} is registered as {got}, but pixelkernels/schemas.def says {want}{hint}"
        )


def with_defaults(fn: Callable, schema: torch._C.FunctionSchema) -> Callable:
    """`fn`, taking the schema's arguments positionally, called with the schema's defaults for
    the arguments a caller left out (a Python kernel gets only the arguments given)."""
    names = [a.name for a in schema.arguments]
    defaults = {a.name: a.default_value for a in schema.arguments if a.has_default_value()}

    @functools.wraps(fn)
    def call(*args, **kwargs):
        given = {**defaults, **dict(zip(names, args)), **kwargs}
        return fn(*(given[n] for n in names))

    return call


# The Triton variants defined so far, by op name (torch keeps a custom op's registrations only
# as long as its definition object lives).
TRITON_OPS: dict = {}
# name -> the Triton variant's Python body, the schema's defaults filled: what the custom op runs,
# called directly by the eager path (_op._direct) to skip the custom op's dispatch
TRITON_BODIES: dict = {}


def triton_variant(name: str) -> Callable:
    """Decorator: defines the opaque op pixelkernels::<name>_triton (``torch.library.custom_op``,
    which passes opcheck and torch.compile under the CPU interpreter) with the table's schema,
    running `fn`, and returns `fn` itself (a call that skips the dispatcher, for compositions).
    `fn` takes the schema's arguments in order, without defaults or annotations: those are the
    schema's alone."""
    schema = function_schema(name)
    names = [a.name for a in schema.arguments]

    def register(fn: Callable):
        params = list(inspect.signature(fn).parameters.values())
        plain = all(
            p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty and p.annotation is p.empty
            for p in params
        )
        if [p.name for p in params] != names or not plain:
            raise TypeError(
                f"{fn.__qualname__}{inspect.signature(fn)} must take ({', '.join(names)}), the arguments of "
                f"{name} in pixelkernels/schemas.def, without defaults or annotations"
            )
        TRITON_BODIES[name] = with_defaults(fn, schema)
        TRITON_OPS[name] = torch.library.custom_op(
            f"{NAMESPACE}::{name}_triton", TRITON_BODIES[name], mutates_args=(), schema=SCHEMAS[name]
        )
        return fn

    return register
