"""Triton kernels, one file per op family. Imported lazily by the ops (Triton is optional).

Nothing here imports torch.nn; each module exposes plain functions that take and return
tensors and launch kernels. Shapes and argument checks are the caller's job (uhrops/*.py).
"""
