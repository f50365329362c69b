"""Ahead-of-time tooling for uhrops' Triton kernels: the compile check (every specialisation
the host code launches, through ptxas, for real GPU architectures), the static per-element
figures of the memory-bound kernels and the attention matmul-work model. They read the
launches through the library's recording seam, :func:`uhrops.kernels._launch.recording`, and
share the specialise/compile/read-PTX helpers of :mod:`tools.kernels.ptx`."""
