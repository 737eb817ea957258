"""The Winograd transforms of retina/winograd.py as C loops, built on first use with the system's C
compiler and loaded with ctypes (no torch headers: the build takes about a second).

In PyTorch ops each transform is 8-12 passes over tensors several times the layer's size; one C loop
per transform reads its input once and writes its output once, vectorized over channels. Where no C
compiler is found (or ``RETINA_C_KERNELS=0``), or the build fails, ``load()`` returns None and
retina/winograd.py uses its PyTorch ops, which compute the same values (tests/test_speed_paths.py
checks that both agree exactly). The library is cached under ``<project>/.cache/kernels/``, named by a
hash of the source, the compiler flags and the CPU's flags, and written atomically, so concurrent
processes (Ray trials) share one build.

Layouts (float32, contiguous): ``x`` (N, H, W, C); ``v`` (16, T, C) for the transformed tiles of all
levels, a level's tiles at rows ``t0 ..``; ``m`` (16, T, ldk) for the products, a weight's channels at
columns ``k0 .. k0 + K``; ``y`` (N, H, W, K). Tile (ty, tx) of a level covers input rows 2ty - 1 ..
2ty + 2 and columns 2tx - 1 .. 2tx + 2 (zero outside the map) and outputs rows 2ty, 2ty + 1 and
columns 2tx, 2tx + 1 (those outside the map dropped).
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

from .config import PROJECT_ROOT

SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;

/* B^T d B of every 4x4 tile of x (zero-padded), into v rows t0.. */
void wg_input(const float *restrict x, float *restrict v, i64 n, i64 h, i64 w, i64 c, i64 T, i64 t0) {
    i64 th = (h + 1) / 2, tw = (w + 1) / 2;
    float *zero = (float *)calloc((size_t)c, sizeof(float));
    for (i64 b = 0; b < n; b++)
    for (i64 ty = 0; ty < th; ty++)
    for (i64 tx = 0; tx < tw; tx++) {
        const float *p[4][4];
        for (int a = 0; a < 4; a++)
            for (int q = 0; q < 4; q++) {
                i64 yy = 2 * ty - 1 + a, xx = 2 * tx - 1 + q;
                p[a][q] = (yy >= 0 && yy < h && xx >= 0 && xx < w) ? x + ((b * h + yy) * w + xx) * c : zero;
            }
        i64 t = t0 + (b * th + ty) * tw + tx;
        float *o[16];
        for (int k = 0; k < 16; k++) o[k] = v + ((i64)k * T + t) * c;
#pragma GCC ivdep
        for (i64 ch = 0; ch < c; ch++) {
            float r[4][4];
            for (int q = 0; q < 4; q++) {
                float d0 = p[0][q][ch], d1 = p[1][q][ch], d2 = p[2][q][ch], d3 = p[3][q][ch];
                r[0][q] = d0 - d2; r[1][q] = d1 + d2; r[2][q] = d2 - d1; r[3][q] = d1 - d3;
            }
            for (int i = 0; i < 4; i++) {
                o[i * 4 + 0][ch] = r[i][0] - r[i][2];
                o[i * 4 + 1][ch] = r[i][1] + r[i][2];
                o[i * 4 + 2][ch] = r[i][2] - r[i][1];
                o[i * 4 + 3][ch] = r[i][1] - r[i][3];
            }
        }
    }
    free(zero);
}

/* the transpose of wg_input: gx (zeroed by the caller) += B g B^T of every tile */
void wg_input_t(const float *restrict gv, float *restrict gx, i64 n, i64 h, i64 w, i64 c, i64 T, i64 t0) {
    i64 th = (h + 1) / 2, tw = (w + 1) / 2;
    float *sink = (float *)malloc((size_t)c * sizeof(float));
    for (i64 b = 0; b < n; b++)
    for (i64 ty = 0; ty < th; ty++)
    for (i64 tx = 0; tx < tw; tx++) {
        float *p[4][4];
        for (int a = 0; a < 4; a++)
            for (int q = 0; q < 4; q++) {
                i64 yy = 2 * ty - 1 + a, xx = 2 * tx - 1 + q;
                p[a][q] = (yy >= 0 && yy < h && xx >= 0 && xx < w) ? gx + ((b * h + yy) * w + xx) * c : sink;
            }
        i64 t = t0 + (b * th + ty) * tw + tx;
        const float *g[16];
        for (int k = 0; k < 16; k++) g[k] = gv + ((i64)k * T + t) * c;
#pragma GCC ivdep
        for (i64 ch = 0; ch < c; ch++) {
            float s[4][4];
            for (int j = 0; j < 4; j++) {
                float g0 = g[j][ch], g1 = g[4 + j][ch], g2 = g[8 + j][ch], g3 = g[12 + j][ch];
                s[0][j] = g0; s[1][j] = g1 - g2 + g3; s[2][j] = g1 + g2 - g0; s[3][j] = -g3;
            }
            for (int a = 0; a < 4; a++) {
                p[a][0][ch] += s[a][0];
                p[a][1][ch] += s[a][1] - s[a][2] + s[a][3];
                p[a][2][ch] += s[a][1] + s[a][2] - s[a][0];
                p[a][3][ch] -= s[a][3];
            }
        }
    }
    free(sink);
}

/* A^T m A (+ bias) of every tile, from m columns k0..k0+k (row length ldk), into y (N, H, W, K) */
void wg_output(const float *restrict m, float *restrict y, const float *restrict bias, i64 n, i64 h, i64 w,
               i64 k, i64 ldk, i64 T, i64 t0, i64 k0) {
    i64 th = (h + 1) / 2, tw = (w + 1) / 2;
    float *sink = (float *)malloc((size_t)k * sizeof(float));
    float *zero = (float *)calloc((size_t)k, sizeof(float));
    const float *bb = bias ? bias : zero;
    for (i64 b = 0; b < n; b++)
    for (i64 ty = 0; ty < th; ty++)
    for (i64 tx = 0; tx < tw; tx++) {
        float *o[2][2];
        for (int a = 0; a < 2; a++)
            for (int q = 0; q < 2; q++) {
                i64 yy = 2 * ty + a, xx = 2 * tx + q;
                o[a][q] = (yy < h && xx < w) ? y + ((b * h + yy) * w + xx) * k : sink;
            }
        i64 t = t0 + (b * th + ty) * tw + tx;
        const float *g[16];
        for (int i = 0; i < 16; i++) g[i] = m + ((i64)i * T + t) * ldk + k0;
#pragma GCC ivdep
        for (i64 ch = 0; ch < k; ch++) {
            float s[2][4];
            for (int j = 0; j < 4; j++) {
                float m0 = g[j][ch], m1 = g[4 + j][ch], m2 = g[8 + j][ch], m3 = g[12 + j][ch];
                s[0][j] = m0 + m1 + m2; s[1][j] = m1 - m2 - m3;
            }
            for (int a = 0; a < 2; a++) {
                o[a][0][ch] = s[a][0] + s[a][1] + s[a][2] + bb[ch];
                o[a][1][ch] = s[a][1] - s[a][2] - s[a][3] + bb[ch];
            }
        }
    }
    free(sink);
    free(zero);
}

/* the transpose of wg_output (without the bias): gy (N, H, W, K) into gm columns k0..k0+k */
void wg_output_t(const float *restrict gy, float *restrict gm, i64 n, i64 h, i64 w, i64 k, i64 ldk, i64 T,
                 i64 t0, i64 k0) {
    i64 th = (h + 1) / 2, tw = (w + 1) / 2;
    float *zero = (float *)calloc((size_t)k, sizeof(float));
    for (i64 b = 0; b < n; b++)
    for (i64 ty = 0; ty < th; ty++)
    for (i64 tx = 0; tx < tw; tx++) {
        const float *p[2][2];
        for (int a = 0; a < 2; a++)
            for (int q = 0; q < 2; q++) {
                i64 yy = 2 * ty + a, xx = 2 * tx + q;
                p[a][q] = (yy < h && xx < w) ? gy + ((b * h + yy) * w + xx) * k : zero;
            }
        i64 t = t0 + (b * th + ty) * tw + tx;
        float *o[16];
        for (int i = 0; i < 16; i++) o[i] = gm + ((i64)i * T + t) * ldk + k0;
#pragma GCC ivdep
        for (i64 ch = 0; ch < k; ch++) {
            float s[2][4];
            for (int a = 0; a < 2; a++) {
                float g0 = p[a][0][ch], g1 = p[a][1][ch];
                s[a][0] = g0; s[a][1] = g0 + g1; s[a][2] = g0 - g1; s[a][3] = -g1;
            }
            for (int j = 0; j < 4; j++) {
                o[j][ch] = s[0][j];
                o[4 + j][ch] = s[0][j] + s[1][j];
                o[8 + j][ch] = s[0][j] - s[1][j];
                o[12 + j][ch] = -s[1][j];
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
    flags = ["-O3", "-std=c99", "-shared", "-fPIC", "-fno-math-errno"]
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
        path = _build(PROJECT_ROOT / ".cache" / "kernels")
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
