"""The Winograd F(4x4, 3x3) transforms of retina/cpu/winograd.py as C loops, built on first use with the
system's C compiler and loaded with ctypes (no torch headers: the build takes about a second).

One C loop per transform reads its input once and writes its output once, vectorized over channels;
the same transforms in PyTorch ops would be tens of passes over memory (retina/cpu/winograd.py's PyTorch
fallback uses the smaller F(2x2, 3x3) for that reason). Where no C compiler is found (or
``RETINA_C_KERNELS=0``), or the build fails, ``load()`` returns None and retina/cpu/winograd.py uses
F(2x2, 3x3) in PyTorch ops; both equal the direct convolution to float32 rounding
(tests/test_speed_paths.py). The library is cached under the user cache folder's ``kernels/`` (retina/paths.py), named by a
hash of the source, the compiler flags and the CPU's flags, and written atomically, so concurrent
processes (Ray trials) share one build.

Layouts (float32, contiguous): ``x`` (N, H, W, C); ``v`` (36, T, C) for the transformed tiles of all
levels, a level's tiles at rows ``t0 ..`` (tile (b, ty, tx) at ``t0 + (b * th + ty) * tw + tx``);
``m`` (36, T, ldk) for the products, a weight's channels at columns ``k0 .. k0 + K``; ``y`` (N, H, W, K).
Tile (ty, tx) covers input rows 4ty - 1 .. 4ty + 4 and columns 4tx - 1 .. 4tx + 4 (zero outside the
map) and outputs rows 4ty .. 4ty + 3 and columns 4tx .. 4tx + 3 (those outside the map dropped).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import torch

from ..paths import cache_dir

SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>

typedef int64_t i64;

/* F(4x4, 3x3) (Lavin and Gray 2016): input tiles 6x6 at stride 4, output tiles 4x4 */
static const float BT[6][6] = {{4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                               {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
static const float AT[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0},
                               {0, 1, -1, 8, -8, 1}};

/* out = sum over a < len of COEF(a) * X(a), the nonzero coefficients only (the loop is unrolled and
   the constant coefficients folded at compile time), in order of a */
#define SPARSE_DOT(COEF, len, X, out) do { float acc_ = 0.0f; int first_ = 1;                        \
    _Pragma("GCC unroll 6") for (int a_ = 0; a_ < (len); a_++) if ((COEF(a_)) != 0.0f) {           \
        float c_ = (COEF(a_)), x_ = (X(a_));                                                        \
        float t_ = c_ == 1.0f ? x_ : c_ == -1.0f ? -x_ : c_ * x_;                                   \
        acc_ = first_ ? t_ : acc_ + t_; first_ = 0; }                                               \
    (out) = acc_; } while (0)

#define TILE_LOOP(h, w) \
    i64 th = ((h) + 3) / 4, tw = ((w) + 3) / 4; \
    for (i64 b = 0; b < n; b++) for (i64 ty = 0; ty < th; ty++) for (i64 tx = 0; tx < tw; tx++)

/* V = B^T d B of every 6x6 tile of x (zero outside the map), into v rows t0.. */
void wg_input(const float *restrict x, float *restrict v, i64 n, i64 h, i64 w, i64 c, i64 T, i64 t0) {
    float *zero = (float *)calloc((size_t)c, sizeof(float));
    TILE_LOOP(h, w) {
        const float *p[6][6];
        for (int a = 0; a < 6; a++)
            for (int q = 0; q < 6; q++) {
                i64 yy = 4 * ty - 1 + a, xx = 4 * tx - 1 + q;
                p[a][q] = (yy >= 0 && yy < h && xx >= 0 && xx < w) ? x + ((b * h + yy) * w + xx) * c : zero;
            }
        i64 t = t0 + (b * th + ty) * tw + tx;
        float *o[36];
        for (int k = 0; k < 36; k++) o[k] = v + ((i64)k * T + t) * c;
#pragma GCC ivdep
        for (i64 ch = 0; ch < c; ch++) {
            float r[6][6];
#pragma GCC unroll 6
            for (int q = 0; q < 6; q++)
#pragma GCC unroll 6
                for (int i = 0; i < 6; i++) {
#define CF(a) BT[i][a]
#define XV(a) p[a][q][ch]
                    SPARSE_DOT(CF, 6, XV, r[i][q]);
#undef XV
#undef CF
                }
#pragma GCC unroll 6
            for (int i = 0; i < 6; i++)
#pragma GCC unroll 6
                for (int j = 0; j < 6; j++) {
#define CF(a) BT[j][a]
#define XV(a) r[i][a]
                    SPARSE_DOT(CF, 6, XV, o[i * 6 + j][ch]);
#undef XV
#undef CF
                }
        }
    }
    free(zero);
}

/* the transpose of wg_input: gx (zeroed by the caller) += B g B^T of every tile */
void wg_input_t(const float *restrict gv, float *restrict gx, i64 n, i64 h, i64 w, i64 c, i64 T, i64 t0) {
    float *sink = (float *)malloc((size_t)c * sizeof(float));
    TILE_LOOP(h, w) {
        float *p[6][6];
        for (int a = 0; a < 6; a++)
            for (int q = 0; q < 6; q++) {
                i64 yy = 4 * ty - 1 + a, xx = 4 * tx - 1 + q;
                p[a][q] = (yy >= 0 && yy < h && xx >= 0 && xx < w) ? gx + ((b * h + yy) * w + xx) * c : sink;
            }
        i64 t = t0 + (b * th + ty) * tw + tx;
        const float *g[36];
        for (int k = 0; k < 36; k++) g[k] = gv + ((i64)k * T + t) * c;
#pragma GCC ivdep
        for (i64 ch = 0; ch < c; ch++) {
            float s[6][6];
#pragma GCC unroll 6
            for (int j = 0; j < 6; j++)
#pragma GCC unroll 6
                for (int a = 0; a < 6; a++) {
#define CF(i) BT[i][a]
#define XV(i) g[(i) * 6 + j][ch]
                    SPARSE_DOT(CF, 6, XV, s[a][j]);
#undef XV
#undef CF
                }
#pragma GCC unroll 6
            for (int a = 0; a < 6; a++)
#pragma GCC unroll 6
                for (int q = 0; q < 6; q++) {
                    float d;
#define CF(j) BT[j][q]
#define XV(j) s[a][j]
                    SPARSE_DOT(CF, 6, XV, d);
#undef XV
#undef CF
                    p[a][q][ch] += d;
                }
        }
    }
    free(sink);
}

/* Y = A^T M A (+ bias) of every tile, from m columns k0..k0+k (rows of length ldk), into y (N, H, W, K) */
void wg_output(const float *restrict m, float *restrict y, const float *restrict bias, i64 n, i64 h, i64 w,
               i64 k, i64 ldk, i64 T, i64 t0, i64 k0) {
    float *sink = (float *)malloc((size_t)k * sizeof(float));
    float *zero = (float *)calloc((size_t)k, sizeof(float));
    const float *bb = bias ? bias : zero;
    TILE_LOOP(h, w) {
        float *o[4][4];
        for (int a = 0; a < 4; a++)
            for (int q = 0; q < 4; q++) {
                i64 yy = 4 * ty + a, xx = 4 * tx + q;
                o[a][q] = (yy < h && xx < w) ? y + ((b * h + yy) * w + xx) * k : sink;
            }
        i64 t = t0 + (b * th + ty) * tw + tx;
        const float *g[36];
        for (int i = 0; i < 36; i++) g[i] = m + ((i64)i * T + t) * ldk + k0;
#pragma GCC ivdep
        for (i64 ch = 0; ch < k; ch++) {
            float s[4][6];
#pragma GCC unroll 6
            for (int j = 0; j < 6; j++)
#pragma GCC unroll 4
                for (int a = 0; a < 4; a++) {
#define CF(i) AT[a][i]
#define XV(i) g[(i) * 6 + j][ch]
                    SPARSE_DOT(CF, 6, XV, s[a][j]);
#undef XV
#undef CF
                }
#pragma GCC unroll 4
            for (int a = 0; a < 4; a++)
#pragma GCC unroll 4
                for (int q = 0; q < 4; q++) {
                    float d;
#define CF(j) AT[q][j]
#define XV(j) s[a][j]
                    SPARSE_DOT(CF, 6, XV, d);
#undef XV
#undef CF
                    o[a][q][ch] = d + bb[ch];
                }
        }
    }
    free(sink);
    free(zero);
}

/* the transpose of wg_output (without the bias): gy (N, H, W, K) into gm columns k0..k0+k */
void wg_output_t(const float *restrict gy, float *restrict gm, i64 n, i64 h, i64 w, i64 k, i64 ldk, i64 T,
                 i64 t0, i64 k0) {
    float *zero = (float *)calloc((size_t)k, sizeof(float));
    TILE_LOOP(h, w) {
        const float *p[4][4];
        for (int a = 0; a < 4; a++)
            for (int q = 0; q < 4; q++) {
                i64 yy = 4 * ty + a, xx = 4 * tx + q;
                p[a][q] = (yy < h && xx < w) ? gy + ((b * h + yy) * w + xx) * k : zero;
            }
        i64 t = t0 + (b * th + ty) * tw + tx;
        float *o[36];
        for (int i = 0; i < 36; i++) o[i] = gm + ((i64)i * T + t) * ldk + k0;
#pragma GCC ivdep
        for (i64 ch = 0; ch < k; ch++) {
            float s[6][4];
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++)
#pragma GCC unroll 6
                for (int i = 0; i < 6; i++) {
#define CF(a) AT[a][i]
#define XV(a) p[a][q][ch]
                    SPARSE_DOT(CF, 4, XV, s[i][q]);
#undef XV
#undef CF
                }
#pragma GCC unroll 6
            for (int i = 0; i < 6; i++)
#pragma GCC unroll 6
                for (int j = 0; j < 6; j++) {
#define CF(q) AT[q][j]
#define XV(q) s[i][q]
                    SPARSE_DOT(CF, 4, XV, o[i * 6 + j][ch]);
#undef XV
#undef CF
                }
        }
    }
    free(zero);
}
"""
_I64 = ctypes.c_int64
_P = ctypes.c_void_p
_SIGNATURES = {
    "wg_input": [_P, _P] + [_I64] * 6,
    "wg_input_t": [_P, _P] + [_I64] * 6,
    "wg_output": [_P, _P, _P] + [_I64] * 8,
    "wg_output_t": [_P, _P] + [_I64] * 8,
}
_lib: Optional[ctypes.CDLL] = None
_tried = False


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler_flags() -> list:
    flags = ["-O3", "-std=gnu99", "-shared", "-fPIC", "-fno-math-errno"]
    cpu = _cpu_flags()
    if platform.machine() in ("x86_64", "AMD64") and " avx2" in cpu:
        flags += ["-mavx2"]
    return flags


def _build(cache_dir: Path) -> Optional[Path]:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    flags = _compiler_flags()
    key = hashlib.sha256("\n".join([SOURCE, compiler, " ".join(flags), _cpu_flags()]).encode()).hexdigest()[:16]
    target = cache_dir / f"winograd_{key}.so"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        src = Path(tmp) / "winograd.c"
        src.write_text(SOURCE)
        out = Path(tmp) / target.name
        result = subprocess.run([compiler, *flags, str(src), "-o", str(out)], capture_output=True, text=True)
        if result.returncode != 0 or not out.exists():
            return None
        os.replace(out, target)  # atomic: another process may be doing the same
    return target


def load() -> Optional[ctypes.CDLL]:
    """The compiled kernels, or None (no compiler, build failure, or ``RETINA_C_KERNELS=0``)."""
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("RETINA_C_KERNELS", "1") == "0":
        return None
    try:
        path = _build(cache_dir("kernels"))
        if path is None:
            return None
        lib = ctypes.CDLL(str(path))
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, None
        _lib = lib
    except (OSError, subprocess.SubprocessError, AttributeError):
        _lib = None
    return _lib


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels apply: built, and every tensor (None: no tensor) float32, contiguous, on the CPU."""
    return load() is not None and all(
        t is None or (t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()) for t in tensors)
