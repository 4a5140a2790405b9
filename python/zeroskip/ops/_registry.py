"""The op registry: one Python function per ONNX op, registered by name, domain and opset.

An op function takes the node's inputs positionally (torch tensors; a missing optional input is
None) and its attributes as keyword arguments named exactly as in ONNX, with ONNX's defaults in the
signature. It returns one tensor, or a tuple with one entry per node output.

    @register("Reshape", since=14, static=(1,))
    def Reshape(data, shape, allowzero=0): ...

- `static`: input positions whose *values* decide output shapes (Reshape's shape, Slice's starts,
  Split's sizes...). The op receives them as Python values (`tolist()`: a list, or a scalar for a
  0-d tensor, None when absent), converted once at plan time when the input is constant.
- `out`: an optional `out_fn(out, *inputs, **attrs)` writing the single output into a preallocated
  tensor; the planner uses it to reuse buffers between steps.
- `fresh=True`: every output is a new tensor, never a view of an input (elementwise math, matmul...).
  Without it the planner assumes an output may alias any input (views: Reshape, Transpose...).
- A function that takes a `_noutputs` keyword is told how many outputs the node declares.
- `prepare`: optional `prepare(shapes, consts, **attrs) -> callable | None`, called once per input
  signature with each input's shape and constant value (None where not constant). The callable it
  returns takes the node's inputs (no attributes) and replaces `fn` for that signature: geometry,
  padding and weight layouts are worked out once instead of on every run. None: use `fn`. An op with
  several ways to run (dense paths, a weight the sparse kernels can take) returns an `Offer`
  (ops/_select.py) instead, and the scheduler (zeroskip.tuning) picks among them by measuring.

Versions resolve like ONNX: the newest registration with `since <= model opset` for the domain.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroskip.errors import UnsupportedOpError

__all__ = ["OpDef", "claimed", "register", "resolve"]


@dataclass(frozen=True)
class OpDef:
    name: str
    domain: str
    since: int
    fn: Callable[..., Any]
    out_fn: Callable[..., Any] | None
    static: tuple[int, ...]
    fresh: bool
    attrs: frozenset[str]  # attribute names the function accepts
    takes_any_attr: bool  # the function has **kwargs
    wants_noutputs: bool
    prepare: Callable[..., Any] | None = None


_OPS: dict[tuple[str, str], list[OpDef]] = {}


def register(
    name: str,
    since: int,
    *,
    domain: str = "",
    static: tuple[int, ...] = (),
    out: Callable[..., Any] | None = None,
    fresh: bool = False,
    prepare: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register `fn` as ONNX op `name` for opsets >= `since` (until a newer registration)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(fn).parameters.values()
        kw = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        versions = _OPS.setdefault((domain, name), [])
        if any(d.since == since for d in versions):
            raise RuntimeError(f"op {domain or 'ai.onnx'}::{name} since {since} registered twice")
        versions.append(
            OpDef(
                name=name,
                domain=domain,
                since=since,
                fn=fn,
                out_fn=out,
                static=tuple(static),
                fresh=fresh,
                attrs=frozenset(kw - {"_noutputs"}),
                takes_any_attr=any(p.kind == p.VAR_KEYWORD for p in params),
                wants_noutputs="_noutputs" in kw,
                prepare=prepare,
            )
        )
        versions.sort(key=lambda d: d.since)
        return fn

    return deco


def resolve(name: str, domain: str, opset: int) -> OpDef | None:
    """The registration that serves `name` at `opset` in `domain`, or None."""
    _load_all()
    found = None
    for d in _OPS.get((_canonical(domain), name), ()):
        if d.since <= opset:
            found = d
    return found


def claimed() -> dict[tuple[str, str], list[int]]:
    """(domain, op) -> the opset versions registered for it."""
    _load_all()
    return {k: [d.since for d in v] for k, v in sorted(_OPS.items())}


def require(name: str, domain: str, opset: int) -> OpDef:
    d = resolve(name, domain, opset)
    if d is None:
        have = [s for s in claimed().get((_canonical(domain), name), [])]
        why = f"only opset >= {have[0]} is implemented" if have else "it is not implemented"
        raise UnsupportedOpError(f"op {domain or 'ai.onnx'}::{name} at opset {opset}: {why}")
    return d


def _canonical(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


_loaded = False


def _load_all() -> None:
    # The op modules register themselves on import; importing them here keeps torch out of
    # `import zeroskip` until a model is loaded.
    global _loaded
    if not _loaded:
        _loaded = True
        from zeroskip.ops import _modules  # noqa: F401
