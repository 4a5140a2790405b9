"""zeroskip.cuda: host-side packing (runs everywhere) and the GPU kernels (skip without a GPU).

Host tests: float -> float16 / bfloat16 rounding; the 2:4 packer (round trip, metadata values, refusal
of non-2:4 weights); the packed 2:4 layout, read lane by lane as the kernel reads it, through an
emulation of mma.sp m16n8k32 written from the PTX ISA (tests/ptx_mma_sp.py), against numpy; the CSR
packing and a numpy model of the CSR kernel's traversal. GPU tests: every kernel against a float64
torch reference over the same edge cases as the CPU kernels (tests/test_kernels.py), the SpMV path,
streams, and argument checks.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import ptx_mma_sp as ptx
import pytest
from conftest import TOLERANCE
from test_kernels import NS, SPARSITIES
from zeroskip import _C, FormatError, InputError, KernelError, cuda
from zeroskip.formats import CSR, NM

try:
    import torch
except ImportError:  # the kernel tests also run on Pythons without torch
    torch = None

HALF = ("float16", "bfloat16")
LAYOUT = _C.cuda_sp24_layout()
CSR_LAYOUT = _C.cuda_csr_layout()
GPU = pytest.mark.skipif(
    not cuda.is_available() or torch is None or not torch.cuda.is_available(),
    reason="needs a CUDA GPU (zeroskip.cuda.is_available() is False or torch has no CUDA)",
)


# ------------------------------------------------------------------------------------------ helpers


def sp24_weight(rng: np.random.Generator, m: int, k: int, sparsity: float = 0.0) -> np.ndarray:
    """Random float32 (m, k) weight, at most 2 nonzeros per 4-wide group (the last group may be cut
    short by k), with a further `sparsity` fraction of the kept values zeroed."""
    groups = -(-k // 4)
    w = rng.standard_normal((m, groups, 4)).astype(np.float32)
    keep = np.argsort(rng.random((m, groups, 4)), axis=2)[:, :, :2]
    mask = np.zeros((m, groups, 4), dtype=bool)
    np.put_along_axis(mask, keep, True, axis=2)
    mask &= rng.random((m, groups, 4)) >= sparsity
    return np.where(mask, w, 0.0).astype(np.float32).reshape(m, groups * 4)[:, :k].copy()


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 (ties to even), as float32; written from the definition."""
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.int64)
    lo = (u >> 16) << 16  # toward zero
    hi = lo + (1 << 16)  # away from zero (the next bfloat16 magnitude)
    rem = u - lo
    up = (rem > 0x8000) | ((rem == 0x8000) & (((lo >> 16) & 1) == 1))
    out = np.where(up, hi, lo).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), out)


def rounded(x: np.ndarray, dtype: str) -> np.ndarray:
    """x rounded to `dtype` (float32 kept as is), as float64."""
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float64)
    if dtype == "bfloat16":
        return bf16_round(x).astype(np.float64)
    return x.astype(np.float32).astype(np.float64)


def bits_to_float(bits: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16":
        return bits.view(np.float16).astype(np.float64)
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


# --------------------------------------------------------------------------- float16 / bfloat16 bits


def _special_floats(rng: np.random.Generator) -> np.ndarray:
    f16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    f16 = f16[np.isfinite(f16)].astype(np.float64)
    steps = np.diff(np.sort(np.unique(f16)))
    mids = np.sort(np.unique(f16))[:-1] + steps / 2  # exact ties between float16 neighbours
    edge = np.array(
        [0.0, -0.0, 65504, 65519.99, 65520, 65536, 1e30, np.inf, -np.inf, np.nan, 2.0**-25, 2.0**-24]
    )
    rand = rng.standard_normal(20_000) * 10.0 ** rng.integers(-9, 6, 20_000)
    bits = rng.integers(0, 1 << 32, 20_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    bits = bits[~np.isnan(bits)]  # signalling NaNs trip numpy's casts; a quiet one is in `edge`
    return np.concatenate([np.concatenate([f16, mids, -mids, edge, rand]).astype(np.float32), bits])


def test_float16_bits_match_numpy(rng):
    x = _special_floats(rng)
    got = _C.cuda_half_bits(x, "float16")
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    same = (got == want) | (np.isnan(x) & ((got & 0x7C00) == 0x7C00) & ((got & 0x3FF) != 0))
    bad = np.flatnonzero(~same)
    assert bad.size == 0, f"{bad.size} wrong, first {x[bad[0]]!r}: {got[bad[0]]:#06x} != {want[bad[0]]:#06x}"


def test_bfloat16_bits_round_to_nearest_even(rng):
    x = _special_floats(rng)
    got = (_C.cuda_half_bits(x, "bfloat16").astype(np.uint32) << 16).view(np.float32)
    want = bf16_round(x)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(x))
    assert same.all(), f"first wrong input {x[~same][0]!r}"
    if torch is not None:
        t = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
        finite = ~np.isnan(x)
        np.testing.assert_array_equal(got[finite].view(np.uint32), t[finite].view(np.uint32))


# ------------------------------------------------------------------------------------- 2:4 packing

SP24_HOST_SHAPES = [(1, 4), (15, 20), (16, 32), (17, 37), (33, 300), (37, 4), (130, 64), (3, 1)]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize(("m", "k"), SP24_HOST_SHAPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 1.0])
def test_sp24_round_trip(dtype, m, k, sparsity, rng):
    w = sp24_weight(rng, m, k, sparsity)
    p = cuda.pack_sp24(w, dtype)
    mt, kt = (
        -(-m // LAYOUT["row_pad"]) * LAYOUT["row_pad"] // 16,
        -(-k // LAYOUT["col_pad"]) * LAYOUT["col_pad"] // 32,
    )
    assert p.values.shape == (mt, kt, 32, 8)
    assert p.values.dtype == np.uint16
    assert p.meta.shape == (mt, kt, 16)
    assert p.meta.dtype == np.uint32
    np.testing.assert_array_equal(p.to_dense(), rounded(w, dtype).astype(np.float32))


@pytest.mark.parametrize("dtype", HALF)
def test_sp24_inputs_of_every_type(dtype, rng):
    """float32, float64 and float16 numpy arrays, NM weights and torch tensors pack alike."""
    w = sp24_weight(rng, 21, 48, 0.2)
    ref = cuda.pack_sp24(w, dtype)
    alike = [w.astype(np.float64), NM.from_dense(w)]
    if dtype == "float16":
        alike.append(w.astype(np.float16))
    if torch is not None:
        alike.append(torch.from_numpy(w))
        alike.append(torch.from_numpy(w).to(getattr(torch, dtype)))
    for v in alike:
        p = cuda.pack_sp24(v, dtype)
        np.testing.assert_array_equal(p.values, ref.values, err_msg=type(v).__name__)
        np.testing.assert_array_equal(p.meta, ref.meta, err_msg=type(v).__name__)


def test_sp24_metadata_of_short_groups():
    """Groups with fewer than 2 nonzeros keep the lowest free positions; every chunk's metadata is one
    of the six values ::ordered_metadata accepts (padding included)."""
    groups = {
        (0, 0, 0, 0): 0b0100,
        (1, 2, 0, 0): 0b0100,
        (0, 0, 5, 0): 0b1000,
        (0, 0, 0, 7): 0b1100,
        (0, 1, 0, 2): 0b1101,
        (0, 3, 0, 0): 0b0100,
        (0, 0, -1, 4): 0b1110,
        (-0.0, 0, 0, 9): 0b1100,
    }
    w = np.zeros((16, 32), dtype=np.float32)
    for c, g in enumerate(groups):
        w[c, 0:4] = g
    p = cuda.pack_sp24(w, "float16")
    for c, want in enumerate(groups.values()):
        # Row c < 8, chunk 0: lane 4c (thread pair member 0), bits 0..3 (read by hand from the PTX text).
        assert p.meta[0, 0, 2 * c] & 0xF == want, f"row {c}: {p.meta[0, 0, 2 * c] & 0xF:#06b} != {want:#06b}"
    nibbles = (p.meta[..., None] >> np.arange(0, 32, 4, dtype=np.uint32)) & 0xF
    assert set(np.unique(nibbles).tolist()) <= ptx.ORDERED_INDICES


def test_sp24_one_value_lands_where_the_ptx_text_says():
    """A single nonzero at row 9, column 22: row g + 8 with g = 1, columns 16 + 4t.. with t = 1, so lane
    4g + t = 5, register a7 (the second kept value: positions 0 and 2 of its chunk), and the metadata
    of lane 4g + 1 = 5, upper half, chunk 5 -> bits 20..23 = 0b1000."""
    w = np.zeros((16, 32), dtype=np.float32)
    w[9, 22] = 3.0
    p = cuda.pack_sp24(w, "float16")
    a, e = _C.cuda_sp24_fragments(p.values, p.meta, 16, 32, 0, 0)
    nonzero = np.argwhere(a != 0)
    assert nonzero.tolist() == [[5, 7]]
    assert a[5, 7] == np.float16(3.0).view(np.uint16)
    assert (int(e[5]) >> 20) & 0xF == 0b1000
    assert int(e[5]) == 0x44844444
    assert all(int(v) == 0x44444444 for i, v in enumerate(e) if i not in (5, 7))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize(("m", "k"), SP24_HOST_SHAPES)
def test_sp24_layout_matches_instruction(dtype, m, k, rng):
    """The registers each lane loads (the kernel's addressing, from the packed arrays), fed through an
    emulation of mma.sp m16n8k32 written from the PTX ISA, give W @ x.T over the whole matrix."""
    w = sp24_weight(rng, m, k, 0.25)
    p = cuda.pack_sp24(w, dtype)
    n = 11
    x = rounded(rng.standard_normal((n, k)).astype(np.float32), dtype)
    mt_count, kt_count = p.values.shape[:2]
    xp = np.zeros((16, kt_count * 32))
    xp[:n, :k] = x
    y = np.zeros((mt_count * 16, 16))
    for mt in range(mt_count):
        for kt in range(kt_count):
            a_bits, e = _C.cuda_sp24_fragments(p.values, p.meta, m, k, mt, kt)
            a = bits_to_float(a_bits, dtype)
            for nb in range(2):
                b = ptx.b_registers(xp[8 * nb : 8 * nb + 8, 32 * kt : 32 * kt + 32].T)
                y[16 * mt : 16 * mt + 16, 8 * nb : 8 * nb + 8] += ptx.mma(a, e, b)
    np.testing.assert_allclose(y[:m, :n], rounded(w, dtype) @ x.T, rtol=1e-12, atol=1e-12)
    assert not y[m:].any()
    assert not y[:, n:].any()


def test_emulator_can_tell_layouts_apart(rng):
    """The emulation is sensitive to what the layout test relies on: the metadata word of each thread of
    a pair, which half of it is which row, and which lanes the selector names."""
    w = sp24_weight(rng, 16, 32)
    p = cuda.pack_sp24(w, "float16")
    a_bits, e = _C.cuda_sp24_fragments(p.values, p.meta, 16, 32, 0, 0)
    a = bits_to_float(a_bits, "float16")
    good = ptx.dense_a(a, e)
    np.testing.assert_array_equal(good, rounded(w, "float16"))
    swapped = e.copy()
    swapped[[0, 1]] = e[[1, 0]]
    assert not np.array_equal(ptx.dense_a(a, swapped), good)
    halves = ((e & 0xFFFF) << 16) | (e >> 16)
    assert not np.array_equal(ptx.dense_a(a, halves), good)
    ignored = e.copy()
    ignored[2::4] = 0x44444444  # T2 of each group is not read with selector 0
    np.testing.assert_array_equal(ptx.dense_a(a, ignored), good)
    with pytest.raises(ValueError, match="undefined"):
        ptx.dense_a(a, np.zeros(32, dtype=np.uint32))  # 0b0000 is not a valid index pair
    unordered = e.copy()
    unordered[0] = (e[0] & ~np.uint32(0xF)) | np.uint32(0b0001)  # (1, 0): not increasing
    with pytest.raises(ValueError, match="undefined"):
        ptx.dense_a(a, unordered)


def test_sp24_rejects_non_2_4():
    w = np.zeros((5, 16), dtype=np.float32)
    w[3, 8:11] = [1.0, 2.0, 3.0]
    with pytest.raises(FormatError, match=r"row 3, columns 8\.\.11 hold 3 nonzeros"):
        cuda.pack_sp24(w)
    with pytest.raises(FormatError, match="not 2:4"):
        cuda.pack_sp24(np.ones((1, 3), dtype=np.float16), "bfloat16")


def test_sp24_argument_errors():
    w = np.zeros((4, 8), dtype=np.float32)
    with pytest.raises(InputError, match="dtype"):
        cuda.pack_sp24(w, "float32")
    with pytest.raises(InputError, match="2-D"):
        cuda.pack_sp24(np.zeros(8, dtype=np.float32))
    with pytest.raises(InputError, match="floating-point"):
        cuda.pack_sp24(np.zeros((4, 8), dtype=np.int32))
    p = cuda.pack_sp24(w)
    with pytest.raises(ValueError, match="outside"):
        _C.cuda_sp24_fragments(p.values, p.meta, 4, 8, p.values.shape[0], 0)


# -------------------------------------------------------------------------------------- CSR packing

CSR_HOST_SHAPES = [(1, 1), (7, 5), (8, 12), (33, 75), (37, 1), (64, 1500)]


@pytest.mark.parametrize("dtype", ["float32", *HALF])
@pytest.mark.parametrize(("m", "k"), CSR_HOST_SHAPES)
def test_csr_packing(dtype, m, k, rng):
    vec, long_row = CSR_LAYOUT["vector"], CSR_LAYOUT["long_row"]
    for s in SPARSITIES:
        w = rng.standard_normal((m, k)).astype(np.float32)
        w[rng.random((m, k)) < s] = 0.0
        w[0] = 0.0  # an empty row
        if m > 3:
            w[3] = rng.standard_normal(k)  # a dense (long, for large k) row
        p = cuda.pack_csr(w if s < 0.5 else CSR.from_dense(w), dtype)
        np.testing.assert_array_equal(p.to_dense(), rounded(w, dtype).astype(np.float32))
        nnz = np.count_nonzero(w, axis=1)
        np.testing.assert_array_equal(p.row_end - p.row_start, nnz)
        assert (p.row_start % vec == 0).all()
        padded = -(-nnz // vec) * vec
        order = np.argsort(p.row_start, kind="stable")
        assert (p.row_start[order][1:] >= (p.row_start + padded)[order][:-1]).all(), "rows overlap"
        assert p.values.size >= (p.row_start + padded).max()
        assert p.values.size % vec == 0
        # Longest rows first; the warp-per-row bin is exactly the rows with >= long_row entries.
        assert (np.diff(padded[p.row_order]) <= 0).all()
        assert p.n_long == np.count_nonzero(padded >= long_row)
        assert sorted(p.row_order.tolist()) == list(range(m))


def _csr_kernel_model(p: cuda.CsrWeight, x: np.ndarray) -> np.ndarray:
    """numpy model of spmm_csr's traversal (kernels.h / spmm_csr.cu): rows in row_order, the first n_long
    by 32 lanes, the rest by short_group lanes; each lane takes 8 entries from an 8-aligned start, masks
    entries at or past row_end, and the group sums its lanes."""
    m, _ = p.shape
    vals = p.values.astype(np.float64) if p.dtype == "float32" else bits_to_float(p.values, p.dtype)
    y = np.full((x.shape[0], m), np.nan)
    for i, row in enumerate(p.row_order):
        lanes = 32 if i < p.n_long else CSR_LAYOUT["short_group"]
        begin, end = int(p.row_start[row]), int(p.row_end[row])
        partial = np.zeros((lanes, x.shape[0]))
        for lane in range(lanes):
            for j in range(begin + 8 * lane, end, 8 * lanes):
                for e in range(8):
                    if j + e < end:
                        partial[lane] += vals[j + e] * x[:, p.indices[j + e]]
        y[:, row] = partial.sum(axis=0)
    return y


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_csr_kernel_traversal_model(dtype, rng):
    w = rng.standard_normal((40, 700)).astype(np.float32)
    w[rng.random(w.shape) < 0.85] = 0.0
    w[5] = rng.standard_normal(700)  # long rows in the warp bin
    w[6, :300] = 1.0
    w[7] = 0.0
    p = cuda.pack_csr(w, dtype)
    assert p.n_long >= 2
    x = rng.standard_normal((3, 700))
    np.testing.assert_allclose(_csr_kernel_model(p, x), x @ rounded(w, dtype).T, rtol=1e-10, atol=1e-10)


def test_csr_packing_errors():
    with pytest.raises(FormatError, match="65536"):
        cuda.pack_csr(CSR.from_dense(np.zeros((2, 70_000), dtype=np.float32)))
    with pytest.raises(InputError, match="dtype"):
        cuda.pack_csr(np.zeros((2, 2), dtype=np.float32), "int8")


# --------------------------------------------------------------------------------- without a GPU


def test_availability_is_consistent():
    assert cuda.compiled() == _C.cuda_compiled()
    assert cuda.is_available() == (cuda.compiled() and _C.cuda_device_count() > 0)
    assert cuda.device_count() >= 0


def test_import_is_light():
    code = "import sys, zeroskip.cuda; print(','.join(m for m in ('torch', 'onnx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.skipif(cuda.is_available(), reason="checks the behaviour without a usable GPU")
def test_kernels_say_why_they_cannot_run():
    w24 = cuda.pack_sp24(np.zeros((4, 8), dtype=np.float32))
    wc = cuda.pack_csr(np.zeros((4, 8), dtype=np.float32))
    why = "built without CUDA" if not cuda.compiled() else "needs a CUDA GPU"
    with pytest.raises(KernelError, match=why):
        cuda.gemm_sp24(w24, None)
    with pytest.raises(KernelError, match=why):
        cuda.spmm_csr(wc, None)
    # The raw entry points exist in every build and raise RuntimeError (no CUDA build, or no device).
    args = (256, 256, 4, 8, 256, 8, 8, 256, 1, "float16", 0, 0, 0)
    with pytest.raises(RuntimeError, match="built without CUDA" if not cuda.compiled() else "cuda gemm_sp24"):
        _C.cuda_gemm_sp24(*args)
    args = (256, 256, 256, 256, 256, 4, 8, 0, 256, 256, 1, "float32", 0, 0)
    with pytest.raises(RuntimeError, match="built without CUDA" if not cuda.compiled() else "cuda spmm_csr"):
        _C.cuda_spmm_csr(*args)


def test_wrong_weight_types_are_refused():
    with pytest.raises(InputError, match="pack_sp24"):
        cuda.gemm_sp24(np.zeros((4, 8)), None)
    with pytest.raises(InputError, match="pack_csr"):
        cuda.spmm_csr(CSR.from_dense(np.zeros((4, 8))), None)
    with pytest.raises(InputError, match="tile"):
        cuda.gemm_sp24(cuda.pack_sp24(np.zeros((4, 8), dtype=np.float32)), None, tile="huge")


# ------------------------------------------------------------------------------------- GPU kernels


def _assert_close(y, w64: np.ndarray, x64: np.ndarray, dtype: str, what: str) -> None:
    """y (torch, N x M) against x64 @ w64.T with the float32-accumulation bound and one output rounding."""
    ref = x64 @ w64.T
    scale = np.abs(x64) @ np.abs(w64).T
    k = max(w64.shape[1], 1)
    tol = TOLERANCE["cuda"][dtype]
    bound = TOLERANCE[np.float32]["rel_to_abs_sum"] * (k + 1) * scale * (1 + tol["out_rel"])
    bound += tol["out_rel"] * np.abs(ref) + tol["abs"]
    got = y.double().cpu().numpy().reshape(ref.shape)
    bad = np.argwhere(~(np.abs(got - ref) <= bound))
    if bad.size:
        i, j = bad[0]
        raise AssertionError(f"{what}: {len(bad)} wrong; first [{i}, {j}]: {got[i, j]!r} != {ref[i, j]!r}")


def _x(rng, n: int, k: int, dtype: str):
    x = rng.standard_normal((n, k)).astype(np.float32)
    xt = torch.from_numpy(x).to(getattr(torch, dtype)).cuda()
    return xt, xt.double().cpu().numpy()


SP24_SHAPES = [(1, 4), (15, 20), (16, 32), (33, 300), (37, 4), (127, 256), (129, 520), (300, 1030)]
SP24_NS = sorted({*NS, 15, 16, 32, 33, 64, 65})


@GPU
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("tile", ["small", "large", "auto"])
def test_gemm_sp24(dtype, tile, rng):
    for m, k in SP24_SHAPES:
        for s in SPARSITIES:
            w = sp24_weight(rng, m, k, s)
            p = cuda.pack_sp24(w, dtype)
            for n in SP24_NS:
                xt, x64 = _x(rng, n, k, dtype)
                y = cuda.gemm_sp24(p, xt, tile=tile)
                assert y.shape == (n, m)
                assert y.dtype == xt.dtype
                _assert_close(y, rounded(w, dtype), x64, dtype, f"{dtype} {tile} {m}x{k} s={s} N={n}")


@GPU
@pytest.mark.parametrize("dtype", HALF)
def test_gemm_sp24_vector_out_and_stream(dtype, rng):
    w = sp24_weight(rng, 200, 512)
    p = cuda.pack_sp24(w, dtype)
    xt, x64 = _x(rng, 1, 512, dtype)
    y = cuda.gemm_sp24(p, xt[0])
    assert y.shape == (200,)
    _assert_close(y, rounded(w, dtype), x64, dtype, "vector")
    out = torch.full((200,), float("nan"), dtype=xt.dtype, device=xt.device)
    assert cuda.gemm_sp24(p, xt[0], out=out) is out
    torch.testing.assert_close(out, y, rtol=0, atol=0)
    side = torch.cuda.Stream()
    xt, x64 = _x(rng, 70, 512, dtype)
    ref = cuda.gemm_sp24(p, xt)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = torch.empty((70, 200), dtype=xt.dtype, device=xt.device)
        for _ in range(3):
            cuda.gemm_sp24(p, xt, out=out)
    side.synchronize()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


CSR_SHAPES = [(1, 1), (7, 5), (8, 12), (33, 75), (37, 1), (300, 1024), (64, 4100)]


@GPU
@pytest.mark.parametrize("dtype", ["float32", *HALF])
def test_spmm_csr(dtype, rng):
    for m, k in CSR_SHAPES:
        for s in SPARSITIES:
            w = rng.standard_normal((m, k)).astype(np.float32)
            w[rng.random((m, k)) < s] = 0.0
            p = cuda.pack_csr(w, dtype)
            for n in sorted({*NS, 2, 9, 16}):
                xt, x64 = _x(rng, n, k, dtype)
                y = cuda.spmm_csr(p, xt)
                assert y.shape == (n, m)
                assert y.dtype == xt.dtype
                _assert_close(y, rounded(w, dtype), x64, dtype, f"{dtype} {m}x{k} s={s} N={n}")


@GPU
@pytest.mark.parametrize("dtype", ["float32", *HALF])
def test_spmv_csr(dtype, rng):
    """N == 1 (the SpMV path), both bins, x given as a vector; a NaN in x reaches only the rows that
    store an entry in its column (the row padding is never multiplied)."""
    k = 3000
    w = rng.standard_normal((500, k)).astype(np.float32)
    w[rng.random(w.shape) < 0.99] = 0.0  # ~30 entries: the short-row bin
    w[::7] = rng.standard_normal((len(w[::7]), k))  # the warp-per-row bin
    p = cuda.pack_csr(w, dtype)
    assert 0 < p.n_long < 500
    xt, x64 = _x(rng, 1, k, dtype)
    y = cuda.spmm_csr(p, xt[0])
    assert y.shape == (500,)
    _assert_close(y, rounded(w, dtype), x64, dtype, "spmv")
    xt[0, 0] = float("nan")
    y = cuda.spmm_csr(p, xt[0]).cpu().numpy()
    np.testing.assert_array_equal(np.isnan(y), w[:, 0] != 0)


@GPU
def test_argument_checks_on_gpu(rng):
    w = sp24_weight(rng, 32, 64)
    p = cuda.pack_sp24(w, "float16")
    x = torch.zeros((4, 64), dtype=torch.float16, device="cuda")
    with pytest.raises(InputError, match="float16"):
        cuda.gemm_sp24(p, x.float())
    with pytest.raises(InputError, match="GPU"):
        cuda.gemm_sp24(p, x.cpu())
    with pytest.raises(InputError, match="shape"):
        cuda.gemm_sp24(p, x[:, :32])
    with pytest.raises(InputError, match="contiguous"):
        cuda.gemm_sp24(p, torch.zeros((64, 4), dtype=torch.float16, device="cuda").t())
    with pytest.raises(InputError, match="shape"):
        cuda.gemm_sp24(p, x, out=torch.empty((4, 31), dtype=torch.float16, device="cuda"))
    big = torch.zeros(512, dtype=torch.float16, device="cuda")
    with pytest.raises(InputError, match="share memory"):
        cuda.gemm_sp24(p, big[:256].view(4, 64), out=big[128:256].view(4, 32))
    y = cuda.gemm_sp24(p, torch.zeros((0, 64), dtype=torch.float16, device="cuda"))
    assert y.shape == (0, 32)
    assert cuda.device_count() == torch.cuda.device_count()
