"""Fused element-wise loops of the SIREN layers (CPU, float32), in C.

Between its matmuls a SIREN layer of the fused kernels does element-wise work that ATen runs as
several passes over ``(B, n, L)`` tensors: the per-signal shift, ``sin u`` (the forward) and
``cos u`` (the latent gradient) of the same pre-activations, and in the backward the product
``q = cos u * g`` with its sums over the coordinates (all of them, and the context subset).
On a 2-core CPU ATen's two precise (0.5 ulp) transcendental passes cost about as much as the
layer's matmul. This module does each group in one multi-threaded, vectorised loop:

* :func:`shifted_sin_cos` (and :func:`sin_cos_into`): ``sin`` and ``cos`` of ``u + shift`` from one
  Cody-Waite range reduction to ``[-pi/4, pi/4]`` and the cephes ``sinf``/``cosf`` minimax
  polynomials, largest error 1e-7 (1.5 ulp near 1; ATen 0.5 ulp; ``tests/test_fused_loops.py``),
  i.e. float32 rounding, not a change of the math. The encoding floor of
  ``benchmarks/bench_meta.py`` (matmuls plus these passes) is 1.5x faster with it than with ATen's
  ``sin`` and ``cos`` (``floor`` vs ``floor+atenloops`` in ``docs/benchmarks.md``). Rows holding an argument
  beyond ``2**16`` in magnitude (or a non-finite one) take libm's ``sinf``/``cosf``.
* :func:`mul_sum_`: ``q = c * g`` in place and both coordinate sums (float blocks, double
  partials, combined in thread order: deterministic).
* ``funcml_latent_grads``: the whole latent-gradient pass tile by tile of coordinates, calling
  torch's own BLAS ``sgemm_`` (:mod:`funcml.encoders.tiled` wraps it).

The loops are compiled once per machine with the system C compiler (``cc -O3 -march=native
-fopenmp``) into the user cache (``$FUNCML_CACHE_DIR`` or ``~/.cache/funcml``, written atomically)
and called through :mod:`ctypes` (which releases the GIL); they link against the OpenMP runtime
torch has already loaded and use torch's thread count. Where they cannot be used (no compiler, a
GPU tensor, another dtype, a non-contiguous tensor, autograd, inside ``torch.compile``, or
``FUNCML_FUSED_LOOPS=0``) the same calls run ATen's operations.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

LIMIT = 65536.0  # |u| beyond this (or NaN/inf) goes to libm: the reduction is exact below it

_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <omp.h>

static inline uint32_t as_u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float as_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* q = round(x 2/pi); r = x - q pi/2 (three-part Cody-Waite with FMA); cephes polynomials on r;
   the quadrant q swaps and negates them. */
static inline void sincos_poly(float x, float *S, float *C) {
    float k = (x * 0.636619772367581343f + 12582912.0f) - 12582912.0f;
    int32_t q = (int32_t)k;
    float r = fmaf(k, -1.5703125f, x);
    r = fmaf(k, -4.83751296997070312e-4f, r);
    r = fmaf(k, -7.54978995489188216e-8f, r);
    float z = r * r;
    float sp = fmaf(fmaf(fmaf(-1.9515295891e-4f, z, 8.3321608736e-3f), z, -1.6666654611e-1f), z * r, r);
    float cp = fmaf(fmaf(fmaf(2.443315711809948e-5f, z, -1.388731625493765e-3f), z, 4.166664568298827e-2f),
                    z * z, fmaf(-0.5f, z, 1.0f));
    int32_t swap = q & 1;
    float s0 = swap ? cp : sp;
    float c0 = swap ? sp : cp;
    *S = as_f(as_u(s0) ^ (((uint32_t)q & 2u) << 30));
    *C = as_f(as_u(c0) ^ (((uint32_t)(q + 1) & 2u) << 30));
}

/* One row of L columns: x = u + sh (sh may be NULL: x = u); c = cos x (c may be u); s = sin x when s
   is given, acc += sin x when acc is given (either or both). A row holding some |x| > limit (or a
   non-finite x) is computed with libm's sinf/cosf instead (returns 1); the check reads the row into
   the cache that the computation then reads it from. */
/* always_inline: each caller's constant NULL arguments then select one loop at compile time */
static inline __attribute__((always_inline)) int sincos_row(const float *u, const float *sh, float *s,
                                                            float *acc, float *c, int64_t L, float limit) {
    int big = 0;
    if (sh) {
        #pragma omp simd reduction(|:big)
        for (int64_t l = 0; l < L; l++) big |= !(fabsf(u[l] + sh[l]) <= limit);
    } else {
        #pragma omp simd reduction(|:big)
        for (int64_t l = 0; l < L; l++) big |= !(fabsf(u[l]) <= limit);
    }
    if (big) {
        for (int64_t l = 0; l < L; l++) {
            float x = u[l] + (sh ? sh[l] : 0.0f), S = sinf(x), C = cosf(x);
            if (s) s[l] = S;
            if (acc) acc[l] += S;
            c[l] = C;
        }
    } else if (acc && s && sh) {
        #pragma omp simd
        for (int64_t l = 0; l < L; l++) {
            float S, C; sincos_poly(u[l] + sh[l], &S, &C); s[l] = S; acc[l] += S; c[l] = C;
        }
    } else if (acc && s) {
        #pragma omp simd
        for (int64_t l = 0; l < L; l++) { float S, C; sincos_poly(u[l], &S, &C); s[l] = S; acc[l] += S; c[l] = C; }
    } else if (acc && sh) {
        #pragma omp simd
        for (int64_t l = 0; l < L; l++) { float S, C; sincos_poly(u[l] + sh[l], &S, &C); acc[l] += S; c[l] = C; }
    } else if (acc) {
        #pragma omp simd
        for (int64_t l = 0; l < L; l++) { float S, C; sincos_poly(u[l], &S, &C); acc[l] += S; c[l] = C; }
    } else if (sh) {
        #pragma omp simd
        for (int64_t l = 0; l < L; l++) { float S, C; sincos_poly(u[l] + sh[l], &S, &C); s[l] = S; c[l] = C; }
    } else {
        #pragma omp simd
        for (int64_t l = 0; l < L; l++) { float S, C; sincos_poly(u[l], &S, &C); s[l] = S; c[l] = C; }
    }
    return big;
}

/* For rows r = b n + i (b < B, i < n) and columns l < L, with x = u[row] + shift[b] (u: B n rows,
   or n rows shared by every b; shift: B x L, or NULL):
   c = cos x (c may be u when u is not shared), s = sin x when s is given, acc += sin x when acc is given.
   Returns 1 when some row took libm's sinf/cosf (see sincos_row), else 0. */
int funcml_sincos(const float *u, int shared, const float *shift, float *s, float *c, float *acc,
                  int64_t B, int64_t n, int64_t L, int nt, float limit) {
    int64_t rows = B * n;
    int64_t exact_rows = 0;
    #pragma omp parallel for num_threads(nt) schedule(static) reduction(+:exact_rows)
    for (int64_t r = 0; r < rows; r++) {
        int64_t b = r / n, i = r - b * n;
        exact_rows += sincos_row(u + (shared ? i : r) * L, shift ? shift + b * L : NULL, s ? s + r * L : NULL,
                                 acc ? acc + r * L : NULL, c + r * L, L, limit);
    }
    return (int)(exact_rows > 0);
}

/* The rows r = b n + i (b < B, i < n) of L columns of v = a b, or, with s, v = a b - s (qb g) (without
   g: v = a b - s qb; qb: one row of L per (b, i) at qb + b qsb + i qsi; qsi = 0: one row per signal),
   written to out (out may be a), and the sums over i: t[b] = sum_i v[b n + i] and, with mask,
   sub[b] = sum_i mask[i] v[b n + i].
   Each thread sums its rows in float blocks of at most 32 rows, blocks in double; the threads'
   partials are combined in thread order (deterministic for a thread count). Returns -1 when out of
   memory for the partial sums. always_inline: each caller's NULL arguments select its loop. */
#define BLOCK_ROWS 32
static inline __attribute__((always_inline)) int rows_and_sums(
        const float *a, const float *bb, const float *s, const float *qb, int64_t qsb, int64_t qsi,
        const float *g, float *out, const float *mask, float *t, float *sub, int64_t B, int64_t n, int64_t L,
        int nt) {
    int64_t width = (mask ? 2 : 1) * B * L;
    double *work = (double *)calloc((size_t)(nt * width), sizeof(double));
    float *blocks = (float *)malloc((size_t)(nt * 2 * L) * sizeof(float));
    if (!work || !blocks) { free(work); free(blocks); return -1; }
    int used = 1;
    int64_t rows = B * n;
    #pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        if (tid == 0) used = nth;
        double *pt = work + tid * width, *ps = pt + B * L;
        float *bt = blocks + tid * 2 * L, *bs = bt + L;
        int64_t lo = rows * tid / nth, hi = rows * (tid + 1) / nth;
        int64_t cur = lo < hi ? lo / n : 0;
        int cnt = 0;
        int64_t b = cur, i = lo - cur * n;      /* row r = b n + i, advanced without a division per row */
        for (int64_t l = 0; l < L; l++) { bt[l] = 0.0f; bs[l] = 0.0f; }
        for (int64_t r = lo; r < hi; r++, i++) {
            if (i == n) { i = 0; b++; }
            if (b != cur || cnt == BLOCK_ROWS) {
                for (int64_t l = 0; l < L; l++) { pt[cur * L + l] += bt[l]; bt[l] = 0.0f; }
                if (mask) for (int64_t l = 0; l < L; l++) { ps[cur * L + l] += bs[l]; bs[l] = 0.0f; }
                cur = b;
                cnt = 0;
            }
            const float *ar = a + r * L, *br = bb + r * L;
            float *vr = out + r * L;
            if (s && g) {
                const float *sr = s + r * L, *gr = g + r * L, *qr = qb + b * qsb + i * qsi;
                #pragma omp simd
                for (int64_t l = 0; l < L; l++) {
                    float v = ar[l] * br[l] - sr[l] * (qr[l] * gr[l]);
                    vr[l] = v; bt[l] += v;
                }
            } else if (s) {
                const float *sr = s + r * L, *qr = qb + b * qsb + i * qsi;
                #pragma omp simd
                for (int64_t l = 0; l < L; l++) { float v = ar[l] * br[l] - sr[l] * qr[l]; vr[l] = v; bt[l] += v; }
            } else if (mask) {
                float m = mask[i];
                #pragma omp simd
                for (int64_t l = 0; l < L; l++) { float v = ar[l] * br[l]; vr[l] = v; bt[l] += v; bs[l] += m * v; }
            } else {
                #pragma omp simd
                for (int64_t l = 0; l < L; l++) { float v = ar[l] * br[l]; vr[l] = v; bt[l] += v; }
            }
            cnt++;
        }
        if (lo < hi) {
            for (int64_t l = 0; l < L; l++) pt[cur * L + l] += bt[l];
            if (mask) for (int64_t l = 0; l < L; l++) ps[cur * L + l] += bs[l];
        }
    }
    for (int64_t j = 0; j < width; j++) {
        double acc = 0.0;
        for (int k = 0; k < used; k++) acc += work[k * width + j];
        if (j < B * L) t[j] = (float)acc; else sub[j - B * L] = (float)acc;
    }
    free(work);
    free(blocks);
    return 0;
}

/* q = c g (q may be c), t[b] = sum_i q[b n + i] and, with mask, sub[b] = sum_i mask[i] q[b n + i]. */
int funcml_mul_sum(const float *c, const float *g, float *q, const float *mask, float *t, float *sub,
                   int64_t B, int64_t n, int64_t L, int nt) {
    return rows_and_sums(c, g, NULL, NULL, 0, 0, NULL, q, mask, t, sub, B, n, L, nt);
}

/* A sine layer's pre-activation adjoint in a second-order reverse: ubar = c xbar - s (qbar g), with
   the adjoint qbar of q = c g (rows at qbar + b qsb + i qsi; g NULL: qbar is the cos adjoint itself),
   and its sums over coordinates t[b]. */
int funcml_field_adjoint(const float *c, const float *xbar, const float *s, const float *qbar, int64_t qsb,
                         int64_t qsi, const float *g, float *ubar, float *t, int64_t B, int64_t n, int64_t L,
                         int nt) {
    return rows_and_sums(c, xbar, s, qbar, qsb, qsi, g, ubar, NULL, t, NULL, B, n, L, nt);
}

/* ---- the whole latent-gradient pass in coordinate tiles (see funcml/encoders/tiled.py) ---- */
typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *, const float *,
                         const float *, const int *, const float *, const int *, const float *, float *, const int *);
typedef int (*local_threads_fn)(int);
static sgemm_fn SGEMM = 0;
static local_threads_fn BLAS_LOCAL_THREADS = 0;

void funcml_tiled_init(void *sgemm, void *local_threads) {
    SGEMM = (sgemm_fn)sgemm;
    BLAS_LOCAL_THREADS = (local_threads_fn)local_threads;
}

/* For each signal b < B and tile j of T coordinates (rows i0 <= i < i1 of n), forward and backward
   through the S sine layers and the output layer, all in per-thread buffers of the tile:
     u_1 = h_i + sigma_b1, u_k = x_{k-1} W'_k^T + sigma_bk, x = sum_k sin u_k, y = x W_K^T + bK,
     r = y - v, e = efac_b w r, g = e W_K, q_k = cos u_k * g_k, g_{k-1} = g_k + q_k W'_k.
   part[(b ntiles + j) P + ...] (P = 1 + S L (1 + has_mask)) receives the tile's sum of w r^2, its
   sums over rows of q_k (S x L) and, with mask, of mask_i q_k. Sums run in float blocks of
   BLOCK_ROWS rows added in double; every tile is independent: the result does not depend on the
   thread count. Returns 0, or -1 when a thread could not allocate its buffers. */
int funcml_latent_grads(const float *h, const float *sigma, const float *wp, const float *WK, const float *bK,
                        const float *values, const float *weights, const float *mask, const float *efac,
                        double *part, int64_t B, int64_t n, int64_t L, int64_t S, int64_t C, int64_t T, int nt,
                        float limit) {
    int64_t ntiles = (n + T - 1) / T, P = 1 + S * L * (mask ? 2 : 1);
    int failed = 0;
    #pragma omp parallel num_threads(nt)
    {
        int old = BLAS_LOCAL_THREADS ? BLAS_LOCAL_THREADS(1) : 0;
        float *cs = (float *)aligned_alloc(64, (size_t)(S * T * L) * sizeof(float));
        float *x = (float *)aligned_alloc(64, (size_t)(T * L) * sizeof(float));
        float *g = (float *)aligned_alloc(64, (size_t)(T * L) * sizeof(float));
        float *e = (float *)malloc((size_t)(T * C) * sizeof(float));
        float *bt = (float *)malloc((size_t)(2 * L) * sizeof(float));
        int ok = cs && x && g && e && bt;
        if (!ok) {
            #pragma omp atomic write
            failed = 1;
        }
        const float one = 1.0f, zero = 0.0f;
        const int iL = (int)L;
        #pragma omp for schedule(static)
        for (int64_t job = 0; job < B * ntiles; job++) {
            if (!ok) continue;
            int64_t b = job / ntiles, j = job - b * ntiles, i0 = j * T, i1 = i0 + T < n ? i0 + T : n;
            int rows = (int)(i1 - i0);
            double *pj = part + job * P, *pt = pj + 1, *ps = pt + S * L;
            /* forward */
            for (int r = 0; r < rows; r++)
                sincos_row(h + (i0 + r) * L, sigma + (b * S) * L, x + r * L, NULL, cs + r * L, L, limit);
            for (int64_t k = 1; k < S; k++) {
                float *ck = cs + k * T * L;
                SGEMM("T", "N", &iL, &rows, &iL, &one, wp + (k - 1) * L * L, &iL, x, &iL, &zero, ck, &iL);
                for (int r = 0; r < rows; r++)
                    sincos_row(ck + r * L, sigma + (b * S + k) * L, NULL, x + r * L, ck + r * L, L, limit);
            }
            /* output, loss, error */
            double lsum = 0.0;
            for (int r = 0; r < rows; r++) {
                int64_t i = i0 + r;
                float w = weights ? weights[b * n + i] : 1.0f;
                const float *xr = x + r * L;
                for (int64_t ch = 0; ch < C; ch++) {
                    const float *wk = WK + ch * L;
                    float y = 0.0f;
                    #pragma omp simd reduction(+:y)
                    for (int64_t l = 0; l < L; l++) y += xr[l] * wk[l];
                    float res = (y + bK[ch]) - values[(b * n + i) * C + ch];
                    lsum += (double)(w * res) * (double)res;
                    e[r * C + ch] = efac[b] * (w * res);
                }
                float *gr = g + r * L;
                for (int64_t l = 0; l < L; l++) gr[l] = 0.0f;
                for (int64_t ch = 0; ch < C; ch++) {
                    float ec = e[r * C + ch];
                    const float *wk = WK + ch * L;
                    #pragma omp simd
                    for (int64_t l = 0; l < L; l++) gr[l] += ec * wk[l];
                }
            }
            pj[0] = lsum;
            /* backward */
            float *bs = bt + L;
            for (int64_t k = S - 1; k >= 0; k--) {
                float *ck = cs + k * T * L;
                double *tk = pt + k * L, *sk = ps + k * L;
                for (int64_t l = 0; l < L; l++) { tk[l] = 0.0; if (mask) sk[l] = 0.0; bt[l] = 0.0f; bs[l] = 0.0f; }
                for (int r = 0; r < rows; r++) {
                    float *qr = ck + r * L;
                    const float *gr = g + r * L;
                    if (mask) {
                        float m = mask[i0 + r];
                        #pragma omp simd
                        for (int64_t l = 0; l < L; l++) { float v = qr[l] * gr[l]; qr[l] = v; bt[l] += v; bs[l] += m * v; }
                    } else {
                        #pragma omp simd
                        for (int64_t l = 0; l < L; l++) { float v = qr[l] * gr[l]; qr[l] = v; bt[l] += v; }
                    }
                    if ((r + 1) % BLOCK_ROWS == 0 || r + 1 == rows) {
                        for (int64_t l = 0; l < L; l++) { tk[l] += bt[l]; bt[l] = 0.0f; }
                        if (mask) for (int64_t l = 0; l < L; l++) { sk[l] += bs[l]; bs[l] = 0.0f; }
                    }
                }
                if (k > 0)
                    SGEMM("N", "N", &iL, &rows, &iL, &one, wp + (k - 1) * L * L, &iL, ck, &iL, &one, g, &iL);
            }
        }
        free(cs); free(x); free(g); free(e); free(bt);
        if (BLAS_LOCAL_THREADS) BLAS_LOCAL_THREADS(old);
    }
    return failed ? -1 : 0;
}
"""

_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno")
_MIN_ELEMENTS = 4096  # below this the ctypes call costs more than it saves
_LOCK = threading.Lock()
_LIB: list = []   # [ctypes library] once loaded, [None] once known unavailable


def cache_dir() -> Path:
    """Where the compiled loop is kept: ``$FUNCML_CACHE_DIR``, else ``$XDG_CACHE_HOME/funcml``, else ``~/.cache/funcml``."""
    if os.environ.get("FUNCML_CACHE_DIR"):
        return Path(os.environ["FUNCML_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "funcml"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def library_path(compiler: str) -> Path:
    """The cached library for this source, compiler, flags and CPU (``-march=native`` code runs only there)."""
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    key = hashlib.sha256("\0".join([_SOURCE, " ".join(_FLAGS), compiler, version, platform.machine(),
                                    _cpu_flags()]).encode()).hexdigest()[:16]
    return cache_dir() / f"fused-loops-{key}.so"


def _build(compiler: str, target: Path) -> None:
    """Compile the loop to ``target`` (temporary file + rename: concurrent builders cannot leave half a library)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "fused_loops.c"
        src.write_text(_SOURCE)
        out = Path(tmp) / target.name
        proc = subprocess.run([compiler, *_FLAGS, str(src), "-o", str(out), "-lm"], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip()[-2000:])
        os.replace(out, target)


def _load():
    """The C library, building it on first use; None where it cannot be had (then ATen is used)."""
    if _LIB:
        return _LIB[0]
    with _LOCK:
        if _LIB:
            return _LIB[0]
        fn = None
        compiler = _compiler()
        if compiler is None:
            log.info("no C compiler found: the SIREN layers' element-wise work uses ATen's kernels")
        else:
            try:
                target = library_path(compiler)
                if not target.exists():
                    _build(compiler, target)
                fn = ctypes.CDLL(str(target))
                p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
                fn.funcml_sincos.restype = i32
                fn.funcml_sincos.argtypes = [p, i32, p, p, p, p, i64, i64, i64, i32, ctypes.c_float]
                fn.funcml_mul_sum.restype = i32
                fn.funcml_mul_sum.argtypes = [p, p, p, p, p, p, i64, i64, i64, i32]
                fn.funcml_field_adjoint.restype = i32
                fn.funcml_field_adjoint.argtypes = [p, p, p, p, i64, i64, p, p, p, i64, i64, i64, i32]
                fn.funcml_tiled_init.restype = None
                fn.funcml_tiled_init.argtypes = [p, p]
                fn.funcml_latent_grads.restype = i32
                fn.funcml_latent_grads.argtypes = [p] * 10 + [i64] * 6 + [i32, ctypes.c_float]
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                log.info("fused loops unavailable (%s): using ATen's kernels", exc)
                fn = None
        _LIB.append(fn)
        return fn


def available() -> bool:
    """Whether the fused loop can run here (it is built on the first call)."""
    return _load() is not None


def _fusable(*tensors: torch.Tensor | None) -> bool:
    """All given tensors are contiguous float32 CPU tensors without autograd, and the loop exists."""
    if os.environ.get("FUNCML_FUSED_LOOPS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous() or t.requires_grad:
            return False
    if torch.compiler.is_compiling():
        return False
    return _load() is not None


def enabled_on(device: torch.device | str) -> bool:
    """Whether float32 work on ``device`` runs in the fused loops (a CPU, the loops built and not
    switched off, not being traced by ``torch.compile``)."""
    return torch.device(device).type == "cpu" and _fusable()


def _applies(numel: int, *tensors: torch.Tensor | None) -> bool:
    """The loops take a call over ``numel`` elements of ``tensors`` (large enough to pay for the call)."""
    return numel >= _MIN_ELEMENTS and _fusable(*tensors)


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def sin_cos_into(u: torch.Tensor, sin_out: torch.Tensor, cos_out: torch.Tensor) -> None:
    """Write ``sin u`` to ``sin_out`` and ``cos u`` to ``cos_out`` (same shape as ``u``; ``cos_out``
    may be ``u`` itself), in one pass where the fused loop applies."""
    if not (sin_out.shape == cos_out.shape == u.shape and _applies(u.numel(), u, sin_out, cos_out)):
        torch.sin(u, out=sin_out)
        torch.cos(u, out=cos_out)
        return
    L = u.shape[-1] if u.dim() else 1
    _load().funcml_sincos(u.data_ptr(), 0, 0, sin_out.data_ptr(), cos_out.data_ptr(), 0, 1, u.numel() // L, L,
                          torch.get_num_threads(), LIMIT)


def shifted_sin_cos(u: torch.Tensor, shift: torch.Tensor, acc: torch.Tensor | None = None,
                    keep_sin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sin x, cos x)`` of ``x = u + shift`` without forming ``x``: a SIREN layer's activation.

    ``u`` ``(B, n, L)`` (its memory then receives ``cos x``) or ``(n, L)`` shared by the batch (then
    ``cos x`` is a new ``(B, n, L)`` tensor); ``shift`` ``(B, L)`` or ``(B, 1, L)``, one row per
    signal. With ``acc`` ``(B, n, L)``, ``sin x`` is added to it in place and ``acc`` is returned
    in its place, or, with ``keep_sin``, ``sin x`` as well (a residual sum and the sines it adds,
    in one pass).
    """
    shared = u.dim() == 2
    b, length = shift.shape[0], shift.shape[-1]
    n = u.shape[0] if shared else u.shape[1]
    shift2 = shift.reshape(b, length).contiguous()
    if not ((acc is None or acc.shape == (b, n, length)) and _applies(b * n * length, u, shift2, acc)):
        x = u.unsqueeze(0) + shift2.unsqueeze(1) if shared else u.add_(shift2.unsqueeze(1))
        s = torch.sin(x)
        x.cos_()
        if acc is not None:
            acc.add_(s)
        return (s if acc is None or keep_sin else acc), x
    c = torch.empty(b, n, length, dtype=u.dtype) if shared else u
    s = torch.empty(b, n, length, dtype=u.dtype) if acc is None or keep_sin else None
    _load().funcml_sincos(u.data_ptr(), int(shared), shift2.data_ptr(), _ptr(s), c.data_ptr(), _ptr(acc), b, n,
                          length, torch.get_num_threads(), LIMIT)
    return (s if acc is None or keep_sin else acc), c


def context_mask(context: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """``(n,)`` 0/1 mask (dtype and device of ``like``) of the coordinate indices ``context`` ``(m,)``."""
    mask = like.new_zeros(n)
    mask[context] = 1.0
    return mask


def mul_sum_(c: torch.Tensor, g: torch.Tensor, context: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``c *= g`` in place (``(B, n, L)`` each) and the sums over the ``n`` axis ``(B, L)``: of all
    rows, and, with ``context`` ``(m,)`` row indices, of those rows; one pass, double accumulators."""
    if not (c.shape == g.shape and _applies(c.numel(), c, g)):
        q = c.mul_(g)
        sub = None if context is None else q.index_select(1, context).sum(dim=1)
        return q.sum(dim=1), sub
    b, n, length = c.shape
    mask = None if context is None else context_mask(context, n, c)
    t = torch.empty(b, length, dtype=c.dtype)
    sub = torch.empty(b, length, dtype=c.dtype) if mask is not None else None
    rc = _load().funcml_mul_sum(c.data_ptr(), g.data_ptr(), c.data_ptr(), _ptr(mask), t.data_ptr(), _ptr(sub), b, n,
                                length, torch.get_num_threads())
    if rc != 0:
        raise MemoryError("funcml_mul_sum: out of memory for its partial sums")
    return t, sub


def field_adjoint(c: torch.Tensor, xbar: torch.Tensor, s: torch.Tensor | None = None,
                  cbar: torch.Tensor | None = None, g: torch.Tensor | None = None,
                  out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A sine layer's pre-activation adjoint ``ubar = c * xbar - s * cbar`` ``(B, n, L)`` and its sum
    over coordinates ``(B, L)``, in one pass where the fused loop applies.

    ``c``, ``s``: the layer's cos and sin; ``xbar``: the adjoint of its output; ``cbar``: the adjoint
    of ``c`` (None: no such term), given as ``cbar * g`` when ``g`` is given (the adjoint of
    ``q = c g``: then ``cbar`` is never formed), ``(B, n, L)`` or one row per signal ``(B, 1, L)``
    (any strides with contiguous rows). ``out``: a buffer for ``ubar`` (reused layer after layer).
    """
    B, n, L = c.shape
    rows_ok = cbar is None or (cbar.dim() == 3 and cbar.shape[0] == B and cbar.shape[1] in (1, n)
                               and cbar.shape[2] == L and cbar.stride(2) == 1 and cbar.dtype == torch.float32
                               and cbar.device.type == "cpu" and not cbar.requires_grad)
    same = xbar.shape == c.shape and all(t is None or t.shape == c.shape for t in (s, g, out))
    if not (rows_ok and same and (cbar is None or s is not None) and _applies(c.numel(), c, xbar, s, g, out)):
        ubar = torch.mul(c, xbar) if out is None else torch.mul(c, xbar, out=out)
        if cbar is not None:
            ubar.addcmul_(s, cbar if g is None else cbar * g, value=-1.0)
        return ubar, ubar.sum(dim=1)
    ubar = torch.empty_like(c) if out is None else out
    t = torch.empty(B, L, dtype=c.dtype)
    nt = torch.get_num_threads()
    if cbar is None:
        rc = _load().funcml_mul_sum(c.data_ptr(), xbar.data_ptr(), ubar.data_ptr(), 0, t.data_ptr(), 0, B, n, L, nt)
    else:
        qsi = 0 if cbar.shape[1] == 1 else cbar.stride(1)
        rc = _load().funcml_field_adjoint(c.data_ptr(), xbar.data_ptr(), s.data_ptr(), cbar.data_ptr(),
                                          cbar.stride(0), qsi, _ptr(g), ubar.data_ptr(), t.data_ptr(), B, n, L, nt)
    if rc != 0:
        raise MemoryError("funcml_field_adjoint: out of memory for its partial sums")
    return ubar, t
