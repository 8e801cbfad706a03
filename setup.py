"""Build of the native parts of the cpu backend (funcml/backends/csrc/).

Everything else is declared in pyproject.toml. Both parts are optional extensions: where one cannot be
built the install still succeeds and funcml runs without it.

* ``funcml.backends._cpu_loops`` (``cpu_loops.c``): the C loops. Without a C compiler with OpenMP the
  ``cpu`` backend is unavailable and funcml runs ATen's operations instead (the ``fused`` backend). A
  local source build (``pip install -e .``, ``make install``) compiles for this machine's CPU
  (``-march=native``); ``FUNCML_PORTABLE_BUILD=1`` (``make wheel``) leaves that out, for a wheel that
  runs on any CPU of its architecture.
* ``funcml.backends._aten_sgemm`` (``aten_sgemm.cpp``): the tiled pass's products on ATen's C++ API
  (torch's BLAS). It is built only where torch is importable at build time (``make install`` installs
  torch first and builds without isolation) and is used only under the torch version it was built
  against; elsewhere the pass takes SciPy's BLAS.
"""

import os

from setuptools import Extension, setup

PORTABLE = os.environ.get("FUNCML_PORTABLE_BUILD", "").strip().lower() in ("1", "true", "yes", "on")
FLAGS = ["-O3", "-fopenmp", "-fno-math-errno"] + ([] if PORTABLE else ["-march=native"])


def aten_extension() -> list[Extension]:
    """The ATen sgemm extension, or none where torch is not importable at build time."""
    try:
        import torch
        from torch.utils.cpp_extension import include_paths, library_paths
    except ImportError:
        return []
    abi = int(bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True)))
    return [Extension("funcml.backends._aten_sgemm", sources=["funcml/backends/csrc/aten_sgemm.cpp"],
                      include_dirs=include_paths(), library_dirs=library_paths(), libraries=["c10", "torch_cpu"],
                      extra_compile_args=["-O2", "-std=c++20", f"-D_GLIBCXX_USE_CXX11_ABI={abi}"],
                      define_macros=[("FUNCML_TORCH_VERSION", f'"{torch.__version__}"')],
                      language="c++", optional=True)]


setup(ext_modules=[Extension("funcml.backends._cpu_loops", sources=["funcml/backends/csrc/cpu_loops.c"],
                             extra_compile_args=FLAGS, extra_link_args=["-fopenmp"], libraries=["m"],
                             optional=True), *aten_extension()])
