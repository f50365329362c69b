import re

from setuptools import find_packages, setup

# One version, read from the package (no import: torch need not be installed to build).
VERSION = re.search(r'^__version__ = "([^"]+)"', open("uhrops/__init__.py", encoding="utf-8").read(),
                    re.M).group(1)

setup(
    name="uhrops",
    version=VERSION,
    description=(
        "Differentiable operators for ultra-high-resolution segmentation (Haar wavelets, "
        "Laplacian pyramids, context attention, overlap tiling) with Triton kernels, and a "
        "model zoo (FCtL, WSDNet)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The wheel ships what users import: the ops and the model zoo (with its configs).
    # benchmarks/, tools/ and tests/ work from a checkout only.
    packages=find_packages(include=["uhrops", "uhrops.*", "zoo", "zoo.*"]),
    package_data={"zoo": ["configs/*.yaml", "data/splits/*/*.txt"]},
    install_requires=[
        # Tested: torch 2.13 (constraints.txt, CI) and 2.11 (the GPU machine); uhrops/ and the
        # zoo's GPU paths use no torch API newer than 2.11 (issue 28's note says how it was
        # checked).
        "torch>=2.11,<2.14",
        "numpy>=1.24",
        "Pillow>=9",
        "PyYAML>=6",
        "safetensors>=0.4",
        "tqdm>=4.60",
    ],
    extras_require={
        # CI compiles every kernel for sm_90 under 3.9 (pinned) and 3.6 (the lowest claimed):
        # tools/kernels/compile_check reads no version-specific Triton internal unguarded.
        "triton": ["triton>=3.6,<3.10"],
        "dev": [
            "pytest>=7",
            "pytest-xdist>=3.5",  # the README's test command runs two workers (-n 2)
            "hypothesis>=6.80",
            "PyWavelets>=1.4",
            "ptwt>=0.1.8",
            "opencv-python-headless>=4.8",
            "pytorch_wavelets>=1.3",
            "setuptools<81",  # pytorch_wavelets imports pkg_resources
            "monai>=1.3",  # oracle for the tiling grid and Gaussian blending
            "triton>=3.6,<3.10",
            "rasterio>=1.3",  # = the geo extra: GeoTIFF tests
            # ONNX export and ONNX Runtime tests (the [onnx] extra)
            "onnx>=1.16",
            "onnxscript>=0.3",
            "onnxruntime>=1.18",
        ],
        # Windowed GeoTIFF / COG / BigTIFF reading and GeoTIFF outputs in zoo.infer.
        "geo": ["rasterio>=1.3"],
        # torch.onnx.export(dynamo=True) needs onnx and onnxscript; zoo.infer --engine
        # onnxruntime needs onnxruntime (uhrops.export.MissingExtraError names this extra)
        "onnx": ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"],
        # The documentation site: python -m sphinx -W -b html docs docs/_build/html
        "docs": ["sphinx>=7.2", "pydata-sphinx-theme>=0.15", "myst-parser>=3"],
        # Anchors the benchmarks compare against (beyond the dev oracles).
        "bench": ["kornia>=0.7", "monai>=1.3"],
    },
)
