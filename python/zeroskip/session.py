"""The public API: `load()` -> `Session`, and ONNX Runtime's `InferenceSession` shape over it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zeroskip.dtypes import from_torch, to_torch
from zeroskip.errors import InputError

__all__ = ["InferenceSession", "NodeArg", "Session", "SessionOptions", "ValueInfo", "load"]


@dataclass(frozen=True)
class ValueInfo:
    """A graph input or output: name, numpy dtype, shape (int, symbolic name, or None if unknown)."""

    name: str
    dtype: np.dtype[Any] | None
    shape: tuple[int | str | None, ...] | None
    onnx_type: str  # ORT's spelling: 'tensor(float)'


def _info(v: Any) -> ValueInfo:
    from zeroskip.dtypes import numpy_dtype, onnx_name

    try:
        dt = numpy_dtype(v.dtype) if v.dtype else None
    except KeyError:
        dt = None
    return ValueInfo(v.name, dt, v.shape, f"tensor({onnx_name(v.dtype)})" if v.dtype else "tensor(unknown)")


_DEVICES = ("cpu",)


def load(
    model: Any,
    *,
    device: str = "cpu",
    threads: int | None = None,
    options: Mapping[str, Any] | None = None,
    sample_inputs: Mapping[str, Any] | None = None,
) -> Session:
    """Load an ONNX model (path, bytes or onnx.ModelProto) and prepare it to run on `device`.

    `threads` sets the intra-op thread count (torch's and the sparse kernels'; both are
    process-wide). Everything that can be done once happens here; `Session.run` only executes.

    Weight-bearing ops (MatMul/Gemm/Conv with constant weights) get the fastest of their dense path
    and every sparse kernel that runs their weight, measured on the real input shape: that of
    `sample_inputs` (tuned here, at load) or of the first `run` with each new shape. Choices are
    cached on disk (`ZEROSKIP_CACHE_DIR`), so the next load of the model measures nothing;
    `Session.report()` shows them.

    options:
      sparse: "auto" (default: measured), "off" (dense only), "force-csr" | "force-bsr" | "force-nm"
      cache: True (default), False (measure every time, keep nothing), or a directory
      progress: show a progress line while tuning (default: when stderr is a terminal)
      optimize: run the graph passes (default True); min_buffer_bytes: smallest pooled buffer
      reference: every op on its plain torch function, no graph passes, no zeroskip kernels (default
        False): the baseline `zeroskip bench` calls "torch", and a check when a result looks wrong
    """
    return Session(model, device=device, threads=threads, options=options, sample_inputs=sample_inputs)


class Session:
    """A loaded model. `run(feeds)` (or calling the session) returns {output name: array}.

    Thread safety: `run` may be called from several threads; runs of one session are serialised
    (they share preallocated buffers). Use one session per thread for parallel throughput.
    """

    def __init__(
        self,
        model: Any,
        *,
        device: str = "cpu",
        threads: int | None = None,
        options: Mapping[str, Any] | None = None,
        sample_inputs: Mapping[str, Any] | None = None,
    ):
        if device not in _DEVICES:
            raise InputError(f"device '{device}' is not available; choose one of {list(_DEVICES)}")
        self.options = dict(options or {})
        known = {"optimize", "min_buffer_bytes", "sparse", "cache", "progress", "reference"}
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise InputError(f"unknown option(s) {unknown}; known: {sorted(known)}")
        import torch

        from zeroskip import kernels
        from zeroskip.onnx_import import read_model, to_graph
        from zeroskip.plan import Program, optimize
        from zeroskip.tuning import Tuner, TuningCache

        if threads is not None:
            if not isinstance(threads, int) or threads < 1:
                raise InputError(f"threads must be a positive int, got {threads!r}")
            torch.set_num_threads(threads)
            kernels.set_num_threads(threads)
        self._torch = torch
        proto = read_model(model)
        graph = to_graph(proto)
        reference = bool(self.options.get("reference", False))
        self.stats = optimize(graph) if self.options.get("optimize", not reference) else {}
        self.graph = graph
        cache_opt = self.options.get("cache", True)
        if cache_opt is True:
            cache = TuningCache()
        elif cache_opt is False or cache_opt is None:
            cache = None
        elif isinstance(cache_opt, (str, os.PathLike)):
            cache = TuningCache(cache_opt)
        else:
            raise InputError(f"options['cache'] must be True, False or a directory, got {cache_opt!r}")
        progress = self.options.get("progress")
        tuner = Tuner(
            str(self.options.get("sparse", "auto")), cache, None if progress is None else bool(progress)
        )
        self.program = Program(
            graph,
            min_buffer_bytes=int(self.options.get("min_buffer_bytes", 64 << 10)),
            tuner=tuner,
            reference=reference,
        )
        self.inputs = [_info(v) for v in graph.inputs]
        self.outputs = [_info(v) for v in graph.outputs]
        self._input_torch_dtypes = [self._torch_dtype(i) for i in self.inputs]
        self._names = [i.name for i in self.inputs]
        # Per input: None when the rank is unknown, else the (axis, size) pairs that are fixed.
        self._static_dims = [
            None if i.shape is None else [(d, s) for d, s in enumerate(i.shape) if isinstance(s, int)]
            for i in self.inputs
        ]
        self._out_names = [o.name for o in self.outputs]
        # _fast_feeds' last (array, shape, tensor) per input: holds on to the last array given.
        self._fed: list[tuple[Any, Any, Any]] = [(None, None, None)] * len(self.inputs)
        # For _fast_feeds: numpy builtin dtypes are singletons, so `is` compares them.
        self._fast_spec = [
            (
                i.name,
                i.dtype if i.dtype is not None and i.dtype.name != "bfloat16" else object(),
                None if i.shape is None else (len(i.shape), static),
            )
            for i, static in zip(self.inputs, self._static_dims)
        ]
        if sample_inputs is not None:
            self.run(sample_inputs)  # plans (and tunes) this shape now

    def report(self) -> Any:
        """Per weight-bearing op and input shape planned so far: weight shape, sparsity and structure,
        every candidate's median µs, the one chosen and why (`str()` for a table, `.rows` for data)."""
        from zeroskip.tuning import Report

        return Report(self.program.tuner.records)

    def _torch_dtype(self, info: ValueInfo) -> Any:
        if info.dtype is None:
            return None
        return to_torch(np.zeros(0, dtype=info.dtype)).dtype

    def run(self, feeds: Mapping[str, Any], *, return_torch: bool = False) -> dict[str, Any]:
        """Run the model. Inputs: numpy arrays or torch tensors, by input name."""
        tensors, key = self._fast_feeds(feeds)
        if tensors is None:
            tensors = self._feeds(feeds)
            key = None
        outs = self.program.run(tensors, key)
        if return_torch:
            return dict(zip(self._out_names, outs))
        return {n: from_torch(o) for n, o in zip(self._out_names, outs)}

    __call__ = run

    def stepper(self, feeds: Mapping[str, Any]) -> Any:
        """The model run step by step on `feeds` (checked as `run` checks them), for tools that read
        values inside it: `.value(name)` runs steps until that value is computed (see plan.Stepper)."""
        return self.program.stepper(self._feeds(feeds))

    def _fast_feeds(self, feeds: Any) -> tuple[list[Any] | None, Any]:
        """The common case, checked cheaply: C-contiguous numpy arrays of the expected dtypes and
        fixed dims. Returns (None, None) for anything else, which `_feeds` then checks in full."""
        if type(feeds) is not dict or len(feeds) != len(self._names):
            return None, None
        out, key = [], []
        fed = self._fed
        for i, (name, want, static) in enumerate(self._fast_spec):
            x = feeds.get(name)
            if type(x) is not np.ndarray or x.dtype is not want:
                return None, None
            flags = x.flags
            if not (flags.c_contiguous and flags.writeable):
                return None, None
            shape = x.shape
            if static is None or len(shape) != static[0]:
                return None, None
            for d, size in static[1]:
                if shape[d] != size:
                    return None, None
            # The same array as last time, still of that shape: the tensor made then shares its
            # memory still (an ndarray's buffer is fixed for its life), and the plan's first steps
            # keep their views of it. Callers that refill one input array skip both conversions.
            last = fed[i]
            if last[0] is not x or last[1] != shape:
                last = fed[i] = (x, shape, self._torch.from_numpy(x))
            out.append(last[2])
            key.append(shape)
        return out, tuple(key)

    def _feeds(self, feeds: Mapping[str, Any]) -> list[Any]:
        """Check and convert the feeds; numpy arrays are shared with torch, not copied."""
        torch = self._torch
        try:
            given = [feeds[n] for n in self._names]
            if len(feeds) != len(given):
                raise KeyError
        except (KeyError, TypeError):
            self._feed_names_error(feeds)
        out = []
        for x, info, tdt, static in zip(given, self.inputs, self._input_torch_dtypes, self._static_dims):
            if type(x) is np.ndarray:
                if not x.flags.writeable or x.dtype.byteorder == ">" or any(s < 0 for s in x.strides):
                    x = np.array(x, copy=True, order="C")
                try:
                    t = to_torch(x)
                except TypeError as e:
                    raise InputError(f"input '{info.name}': {x.dtype} arrays are not supported") from e
            elif isinstance(x, torch.Tensor):
                t = x.detach()
                if t.device.type != "cpu":
                    raise InputError(f"input '{info.name}' is on {t.device}; this session runs on cpu")
            else:
                try:
                    a = np.asarray(x)
                except (ValueError, TypeError) as e:
                    raise InputError(
                        f"input '{info.name}': cannot be made an array ({str(e).splitlines()[0]}); "
                        "pass a numpy array"
                    ) from e
                if a.dtype == object or a.dtype.kind in "USV":
                    raise InputError(f"input '{info.name}': {a.dtype} arrays are not supported")
                t = torch.from_numpy(np.array(a, copy=True, order="C"))
            if tdt is not None and t.dtype != tdt:
                raise InputError(
                    f"input '{info.name}': dtype {str(t.dtype).replace('torch.', '')}, the model expects "
                    f"{info.dtype}; convert it with .astype(np.{info.dtype})"
                )
            if static is not None:
                shape = t.shape
                if len(shape) != len(info.shape):
                    raise InputError(
                        f"input '{info.name}': rank {t.dim()} (shape {tuple(shape)}), the model expects "
                        f"rank {len(info.shape)} {_fmt_shape(info.shape)}"
                    )
                for d, want in static:
                    if shape[d] != want:
                        raise InputError(
                            f"input '{info.name}': dimension {d} is {shape[d]}, the model expects {want} "
                            f"(shape {_fmt_shape(info.shape)})"
                        )
            out.append(t)
        return out

    def _feed_names_error(self, feeds: Any) -> None:
        if not isinstance(feeds, Mapping):
            raise InputError(f"feeds must be a mapping of input name to array, not {type(feeds).__name__}")
        extra = sorted(set(feeds) - set(self._names))
        missing = [n for n in self._names if n not in feeds]
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unknown input(s) {extra}")
        raise InputError(f"{'; '.join(parts)}; the model takes {self._names}")


def _fmt_shape(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


# --- ONNX Runtime compatibility ------------------------------------------------------------------


@dataclass(frozen=True)
class NodeArg:
    """What ORT's get_inputs()/get_outputs() return: name, type string, shape."""

    name: str
    type: str
    shape: list[int | str | None]


class SessionOptions:
    """The part of onnxruntime.SessionOptions zeroskip honours: intra_op_num_threads."""

    def __init__(self) -> None:
        self.intra_op_num_threads = 0
        self.inter_op_num_threads = 0
        self.graph_optimization_level: Any = None
        self.log_severity_level = 2


class InferenceSession:
    """Drop-in for `onnxruntime.InferenceSession` in common code: `run(output_names, input_feed)`."""

    def __init__(
        self,
        path_or_bytes: str | bytes | os.PathLike[str],
        sess_options: SessionOptions | None = None,
        providers: Sequence[Any] | None = None,
        **kwargs: Any,
    ):
        threads = None
        if sess_options is not None and getattr(sess_options, "intra_op_num_threads", 0):
            threads = int(sess_options.intra_op_num_threads)
        for p in providers or ():
            name = p[0] if isinstance(p, (tuple, list)) else p
            if name not in ("CPUExecutionProvider",):
                raise InputError(f"provider {name!r} is not available in zeroskip; use CPUExecutionProvider")
        self._session = Session(path_or_bytes, threads=threads)

    def get_inputs(self) -> list[NodeArg]:
        return [NodeArg(i.name, i.onnx_type, list(i.shape or [])) for i in self._session.inputs]

    def get_outputs(self) -> list[NodeArg]:
        return [NodeArg(o.name, o.onnx_type, list(o.shape or [])) for o in self._session.outputs]

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any], run_options: Any = None
    ) -> list[Any]:
        res = self._session.run(input_feed)
        if not output_names:
            return list(res.values())
        unknown = [n for n in output_names if n not in res]
        if unknown:
            raise InputError(f"unknown output name(s) {unknown}; the model has {list(res)}")
        return [res[n] for n in output_names]
