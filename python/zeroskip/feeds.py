"""Model inputs: generated from a session's input specs (`sample_feeds`), or read from an .npz file
(`load_npz`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zeroskip.errors import InputError

__all__ = ["load_npz", "sample_feeds"]


def _vocab_sizes(session: Any) -> dict[str, int]:
    """Graph input name -> rows of the constant table it indexes through a Gather (token ids)."""
    sizes: dict[str, int] = {}
    names = {id(v): v.name for v in session.graph.inputs}
    for n in session.graph.nodes:
        if (
            n.op_type == "Gather"
            and len(n.inputs) > 1
            and n.inputs[0] is not None
            and n.inputs[1] is not None
        ):
            data, idx = n.inputs
            if id(idx) in names and data.is_const and data.shape:
                sizes[names[id(idx)]] = min(sizes.get(names[id(idx)], 1 << 62), int(data.shape[0]))
    return sizes


def sample_feeds(
    session: Any,
    batch: int = 1,
    seq: int = 128,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Inputs for `session` from its input specs: a symbolic first dim is `batch`, other symbolic dims
    `seq` (or the shape given in `shapes`); token ids in range of the embedding they index, masks all
    ones, other integers 0/1, floats uniform in [-1, 1)."""
    rng = np.random.default_rng(seed)
    vocab = _vocab_sizes(session)
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - {i.name for i in session.inputs})
    if unknown:
        raise InputError(
            f"--shape names unknown input(s) {unknown}; the model takes {[i.name for i in session.inputs]}"
        )
    feeds = {}
    for info in session.inputs:
        if info.dtype is None or info.shape is None:
            raise InputError(f"input '{info.name}' has no declared dtype/shape; give it with --shape")
        if info.name in shapes:
            shape = tuple(int(d) for d in shapes[info.name])
        else:
            shape = tuple(
                d if isinstance(d, int) else (batch if i == 0 else seq) for i, d in enumerate(info.shape)
            )
        dt = info.dtype
        if dt.kind == "f" or dt.name == "bfloat16":
            feeds[info.name] = rng.uniform(-1, 1, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[info.name] = np.ones(shape, dtype=dt)
        elif info.name in vocab:
            feeds[info.name] = rng.integers(0, vocab[info.name], size=shape).astype(dt)
        elif "mask" in info.name.lower():
            feeds[info.name] = np.ones(shape, dtype=dt)
        else:
            feeds[info.name] = rng.integers(0, 2, size=shape).astype(dt)
    return feeds


def load_npz(path: str | os.PathLike[str], session: Any) -> list[dict[str, np.ndarray]]:
    """Groups of arrays for `session`'s inputs from an .npz. One group: the arrays by input name, or
    (arr_0, arr_1, ...) in input order. Several groups (inputs of different shapes, e.g. one group per
    sequence length, so nothing is padded): NAME.0, NAME.1, ... for every input NAME. The first dim
    of every array is the sample (batch) dim; it must agree within a group."""
    names = [i.name for i in session.inputs]
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read '{path}' as an .npz of input arrays: {e}") from e
    if set(names) <= set(arrays):
        groups = [{n: arrays[n] for n in names}]
    elif len(arrays) == len(names) and all(f"arr_{i}" in arrays for i in range(len(names))):
        groups = [{n: arrays[f"arr_{i}"] for i, n in enumerate(names)}]
    elif names and f"{names[0]}.0" in arrays:
        groups = []
        while all(f"{n}.{len(groups)}" in arrays for n in names):
            groups.append({n: arrays[f"{n}.{len(groups)}"] for n in names})
        used = {f"{n}.{k}" for n in names for k in range(len(groups))}
        if set(arrays) - used:
            raise InputError(
                f"'{path}': arrays {sorted(set(arrays) - used)[:4]} do not fit the groups NAME.0, "
                f"NAME.1, ... of the model's inputs {names}"
            )
    else:
        raise InputError(
            f"'{path}' holds {sorted(arrays)}; the model takes {names}: save the arrays under those names"
        )
    for feeds in groups:
        sizes = {v.shape[0] if v.ndim else None for v in feeds.values()}
        if len(sizes) != 1 or None in sizes:
            raise InputError(
                f"'{path}': every array needs the same first (sample) dim, got {sorted(map(str, sizes))}"
            )
        for info in session.inputs:
            a = feeds[info.name]
            if info.dtype is not None and a.dtype != info.dtype:
                if a.dtype.kind != info.dtype.kind and not (a.dtype.kind in "iu" and info.dtype.kind in "iu"):
                    raise InputError(
                        f"'{path}': input '{info.name}' is {a.dtype}, the model wants {info.dtype}"
                    )
                feeds[info.name] = a.astype(info.dtype)
    return groups
