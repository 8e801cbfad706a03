/* A Fortran-BLAS-shaped sgemm on ATen's public C++ API, for the cpu backend's tiled pass
   (funcml/backends/csrc/cpu_loops.c calls its products through an sgemm function pointer).

   ATen runs a float32 product on the BLAS torch was built with (MKL on x86 wheels), which is faster
   than SciPy's OpenBLAS at the pass's tile sizes (benchmarks/results/backends-vs-main.json). Each call
   views the caller's buffers as tensors (at::from_blob, no copy; the views of recent calls are kept per
   thread, since a pass repeats the same buffers) and runs ATen's CPU kernel (at::cpu::mm_out, or
   at::cpu::addmm_out when C is read). Called from the pass's OpenMP threads inside their parallel
   region, where ATen and its BLAS run on the calling thread.

   Built by setup.py as the optional extension funcml.backends._aten_sgemm against the torch present at
   build time (a plain shared library, loaded by funcml/backends/tiled.py with ctypes after torch, which
   has loaded libtorch_cpu and libc10). It records that torch's version (FUNCML_TORCH_VERSION), and
   tiled.py uses it only under the same version. */

#include <array>

#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm_cpu_dispatch.h>

namespace {

/* A row-major float32 view (rows x cols, strides s0, s1) of memory the caller owns. */
struct View {
    const float *data = nullptr;
    int64_t rows = 0, cols = 0, s0 = 0, s1 = 0;
    at::Tensor tensor;
};

constexpr int CACHED_VIEWS = 32;  /* a pass's weights and tile buffers: 2 (S - 1) + S + 2 views */

at::Tensor view(const float *data, int64_t rows, int64_t cols, int64_t s0, int64_t s1) {
    thread_local std::array<View, CACHED_VIEWS> cache;
    thread_local int next = 0;
    for (const View &v : cache)
        if (v.data == data && v.rows == rows && v.cols == cols && v.s0 == s0 && v.s1 == s1) return v.tensor;
    View &v = cache[next];
    next = (next + 1) % CACHED_VIEWS;
    v = View{data, rows, cols, s0, s1,
             at::from_blob(const_cast<float *>(data), {rows, cols}, {s0, s1}, at::TensorOptions().dtype(at::kFloat))};
    return v.tensor;
}

}  // namespace

extern "C" {

/* The version of the torch this library was built against (torch.__version__, set by setup.py). */
const char *funcml_aten_torch_version(void) { return FUNCML_TORCH_VERSION; }

/* Column-major C (m x n) = alpha op(A) op(B) + beta C (beta 0: C is not read), as BLAS sgemm. In row-major
   terms C^T (n x m) = op(B)^T op(A)^T + beta C^T, which is what runs. trans: 'N' or 'T' (case-insensitive). */
void funcml_aten_sgemm(const char *transa, const char *transb, const int *m, const int *n, const int *k,
                       const float *alpha, const float *a, const int *lda, const float *b, const int *ldb,
                       const float *beta, float *c, const int *ldc) {
    const bool ta = (*transa == 'T' || *transa == 't'), tb = (*transb == 'T' || *transb == 't');
    const int64_t M = *m, N = *n, K = *k;
    /* row-major views: op(A)^T is K x M, op(B)^T is N x K, C^T is N x M */
    at::Tensor at_ = ta ? view(a, K, M, 1, *lda) : view(a, K, M, *lda, 1);
    at::Tensor bt_ = tb ? view(b, N, K, 1, *ldb) : view(b, N, K, *ldb, 1);
    at::Tensor ct_ = view(c, N, M, *ldc, 1);
    if (*beta == 0.0f && *alpha == 1.0f)
        at::cpu::mm_out(ct_, bt_, at_);
    else
        at::cpu::addmm_out(ct_, ct_, bt_, at_, *beta, *alpha);
}

}  /* extern "C" */
