"""Build of the native part: the cpu backend's C loops (funcml/backends/csrc/cpu_loops.c).

Everything else is declared in pyproject.toml. The loops are an optional extension: without a C compiler
with OpenMP the install still succeeds and funcml runs ATen's operations instead (the ``fused`` backend).
A local source build (``pip install -e .``, ``make install``) compiles for this machine's CPU
(``-march=native``); ``FUNCML_PORTABLE_BUILD=1`` (``make wheel``) leaves that out, for a wheel that runs
on any CPU of its architecture.
"""

import os

from setuptools import Extension, setup

PORTABLE = os.environ.get("FUNCML_PORTABLE_BUILD", "").strip().lower() in ("1", "true", "yes", "on")
FLAGS = ["-O3", "-fopenmp", "-fno-math-errno"] + ([] if PORTABLE else ["-march=native"])

setup(ext_modules=[Extension("funcml.backends._cpu_loops", sources=["funcml/backends/csrc/cpu_loops.c"],
                             extra_compile_args=FLAGS, extra_link_args=["-fopenmp"], libraries=["m"],
                             optional=True)])
