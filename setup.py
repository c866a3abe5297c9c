"""The compiled part of zeroscale: the native data plane (``src/native``, docs/dataplane.md), built as the
extension module ``zeroscale._dataplane``. Optional: where no C compiler is at hand the package installs
without it, and ``zeroscale serve --native-port`` says that it is missing."""

from glob import glob

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "zeroscale._dataplane",
            sources=sorted(glob("src/native/*.c")),
            depends=sorted(glob("src/native/*.h")),
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
