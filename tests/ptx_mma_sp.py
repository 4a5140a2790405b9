"""What mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{f16,bf16}.{f16,bf16}.f32 computes,
emulated from the register contents of the 32 lanes of a warp.

Written from the PTX ISA's text for the instruction ("Sparse matrix storage" and "Matrix Fragments for
sparse mma.m16n8k32 with .f16 and .bf16 types"), not from zeroskip's packer, so that the tests can
check the packer's layout against the instruction's definition without a GPU:

- lane L: groupID g = L >> 2, threadID_in_group t = L % 4.
- A (16 x 32, 2:4 along each row): 8 halves a0..a7 per lane; a0,a1 and a4,a5 belong to row g, a2,a3
  and a6,a7 to row g + 8; a0..a3 to the 4-wide chunk of columns 4t..4t+3, a4..a7 to columns
  16 + 4t..16 + 4t + 3. Each pair holds the chunk's two kept elements, the first at the position given
  by the lower 2-bit index of the chunk's metadata, the second at the upper one.
- metadata: with sparsity selector 0 the thread pair T0, T1 of each group of four supplies it
  (selector 1: T2, T3). Lane 4g + p (p = 0, 1) holds 16 two-bit indices: bits 0..15 for row g and bits
  16..31 for row g + 8, each half covering columns 16p..16p + 15, four bits per chunk (lowest chunk
  lowest). With ::ordered_metadata only 0b0100, 0b1000, 0b1001, 0b1100, 0b1101, 0b1110 are
  meaningful per chunk; anything else is undefined behaviour, so this emulation refuses it.
- B (32 x 8, .col): 8 halves b0..b7 per lane; b_i is B[2t + (i & 1) + 8 * (i >> 1)][g].
- C and D (16 x 8, f32): c0,c1 are row g, columns 2t, 2t + 1; c2,c3 row g + 8.
"""

from __future__ import annotations

import numpy as np

ORDERED_INDICES = frozenset({0b0100, 0b1000, 0b1001, 0b1100, 0b1101, 0b1110})


def dense_a(a: np.ndarray, e: np.ndarray, selector: int = 0) -> np.ndarray:
    """A (16 x 32, float64) from the lanes' A registers a (32 x 8 values) and metadata registers e (32)."""
    if selector not in (0, 1):
        raise ValueError("m16n8k32 .f16/.bf16 takes sparsity selector 0 or 1")
    a = np.asarray(a, dtype=np.float64).reshape(32, 8)
    e = np.asarray(e, dtype=np.uint64).reshape(32)
    # indices[row, chunk] = (first, second) position inside the chunk, from the supplying thread pair.
    indices = np.full((16, 8, 2), -1, dtype=np.int64)
    for g in range(8):
        for p in range(2):
            word = int(e[4 * g + 2 * selector + p])
            for half, row in ((0, g), (1, g + 8)):
                bits16 = (word >> (16 * half)) & 0xFFFF
                for j in range(4):
                    nibble = (bits16 >> (4 * j)) & 0xF
                    if nibble not in ORDERED_INDICES:
                        raise ValueError(
                            f"metadata of row {row}, chunk {4 * p + j} is {nibble:#06b}: undefined for "
                            "::ordered_metadata"
                        )
                    indices[row, 4 * p + j] = (nibble & 3, nibble >> 2)
    out = np.zeros((16, 32))
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        for i in range(8):
            row = g if (i < 2 or 4 <= i < 6) else g + 8
            first_col = 4 * t if i < 4 else 4 * t + 16
            chunk = first_col // 4
            out[row, first_col + indices[row, chunk, i & 1]] = a[lane, i]
    return out


def dense_b(b: np.ndarray) -> np.ndarray:
    """B (32 x 8, float64) from the lanes' B registers b (32 x 8 values)."""
    b = np.asarray(b, dtype=np.float64).reshape(32, 8)
    out = np.zeros((32, 8))
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        for i in range(8):
            out[2 * t + (i & 1) + 8 * (i >> 1), g] = b[lane, i]
    return out


def b_registers(b_dense: np.ndarray) -> np.ndarray:
    """The lanes' B registers (32 x 8) holding a dense 32 x 8 B (the inverse of dense_b)."""
    regs = np.zeros((32, 8))
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        for i in range(8):
            regs[lane, i] = b_dense[2 * t + (i & 1) + 8 * (i >> 1), g]
    return regs


def dense_c(c: np.ndarray) -> np.ndarray:
    """C or D (16 x 8) from the lanes' accumulator registers c (32 x 4)."""
    c = np.asarray(c, dtype=np.float64).reshape(32, 4)
    out = np.zeros((16, 8))
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        for i in range(4):
            out[g + 8 * (i >> 1), 2 * t + (i & 1)] = c[lane, i]
    return out


def mma(
    a: np.ndarray, e: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, selector: int = 0
) -> np.ndarray:
    """D = A @ B + C as a dense 16 x 8 float64 matrix (the hardware sums in float32, in its own order)."""
    d = dense_a(a, e, selector) @ dense_b(b)
    return d if c is None else d + dense_c(c)
