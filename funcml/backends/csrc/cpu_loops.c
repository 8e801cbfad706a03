/* The CPU backend's element-wise loops and tiled latent-gradient pass (float32), called through ctypes
   by funcml/backends/native.py and funcml/backends/tiled.py.

   Built by setup.py as the extension funcml.backends._cpu_loops (a plain shared library: it has no
   Python module init and is never imported, only loaded): -O3 -fopenmp -fno-math-errno, and
   -march=native for a local source build (FUNCML_PORTABLE_BUILD=1 leaves it out, as `make wheel` does).
   OpenMP is the runtime torch has already loaded (libgomp.so.1), so the loops use torch's threads. */

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

/* ---- the whole latent-gradient pass in coordinate tiles (see funcml/backends/tiled.py) ----
   sgemm: the address of a Fortran-BLAS-shaped sgemm (funcml/backends/tiled.py:blas: ATen's, or SciPy's
   cython_blas), which runs on the calling thread for the duration of a call (each of our threads calls
   it). Its products run in calls of at most G rows of a tile (a whole tile for ATen, OpenBLAS's
   small-matrix kernels for SciPy's), wp and wpt (the same L x L weights transposed) both as "N", "N". */
typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *, const float *,
                         const float *, const int *, const float *, const int *, const float *, float *, const int *);

/* c (rows x L) = x (rows x L) a + beta c, all row-major (a: L x L), in sgemm calls of at most G rows each. */
static void gemm_rows(sgemm_fn SGEMM, const float *a, const float *x, float *c, int rows, int L, float beta,
                      int G) {
    const float one = 1.0f;
    for (int r0 = 0; r0 < rows; r0 += G) {
        int m = rows - r0 < G ? rows - r0 : G;
        SGEMM("N", "N", &L, &m, &L, &one, a, &L, x + (int64_t)r0 * L, &L, &beta, c + (int64_t)r0 * L, &L);
    }
}

/* For each signal b < B and tile j of T coordinates (rows i0 <= i < i1 of n), forward and backward
   through the S sine layers and the output layer, all in per-thread buffers of the tile:
     u_1 = h_i + sigma_b1, u_k = x_{k-1} W'_k^T + sigma_bk, x = sum_k sin u_k, y = x W_K^T + bK,
     r = y - v, e = efac_b w r, g = e W_K, q_k = cos u_k * g_k, g_{k-1} = g_k + q_k W'_k.
   part[(b ntiles + j) P + ...] (P = 1 + S L (1 + has_mask)) receives the tile's sum of w r^2, its
   sums over rows of q_k (S x L) and, with mask, of mask_i q_k. Sums run in float blocks of
   BLOCK_ROWS rows added in double; every tile is independent: the result does not depend on the
   thread count. Returns 0, or -1 when a thread could not allocate its buffers. */
int funcml_latent_grads(void *sgemm, const float *h, const float *sigma, const float *wp, const float *wpt,
                        const float *WK,
                        const float *bK, const float *values, const float *weights, const float *mask, const float *efac,
                        double *part, int64_t B, int64_t n, int64_t L, int64_t S, int64_t C, int64_t T, int64_t G,
                        int nt, float limit) {
    sgemm_fn SGEMM = (sgemm_fn)sgemm;
    int64_t ntiles = (n + T - 1) / T, P = 1 + S * L * (mask ? 2 : 1);
    int failed = 0;
    #pragma omp parallel num_threads(nt)
    {
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
                gemm_rows(SGEMM, wpt + (k - 1) * L * L, x, ck, rows, iL, 0.0f, (int)G);
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
                    gemm_rows(SGEMM, wp + (k - 1) * L * L, ck, g, rows, iL, 1.0f, (int)G);
            }
        }
        free(cs); free(x); free(g); free(e); free(bt);
    }
    return failed ? -1 : 0;
}
