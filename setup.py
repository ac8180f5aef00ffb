"""Build script: compiles every Cython module under wincaffe/ and layers/.

Any ``*.pyx`` file placed in ``wincaffe/_kernels/`` or ``layers/`` is picked up
automatically, so adding a kernel never means editing this file.
"""
import glob
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _extensions():
    if sys.platform == "win32":
        compile_args, link_args = ["/O2", "/openmp"], []
    else:
        compile_args = ["-O3", "-fopenmp"]
        link_args = ["-fopenmp"]
    exts = []
    for pyx in sorted(glob.glob(os.path.join("wincaffe", "**", "*.pyx"), recursive=True)
                      + glob.glob(os.path.join("layers", "**", "*.pyx"), recursive=True)):
        module = os.path.splitext(pyx)[0].replace(os.sep, ".")
        exts.append(Extension(
            module, [pyx],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        ))
    return cythonize(exts, language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True,
        "initializedcheck": False,
    })


setup(ext_modules=_extensions())
