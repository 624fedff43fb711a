"""Build script: compiles the C core through cffi's out-of-line API mode."""
from setuptools import setup

setup(cffi_modules=["cllm/_build.py:ffibuilder"])
