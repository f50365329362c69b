"""Process-group set-up for ``torchrun --nproc_per_node=N -m zoo.train`` and synced BatchNorm.

NCCL on GPUs, gloo on CPUs. torch's SyncBatchNorm runs only on GPUs, so on the CPU
:class:`AllReduceBatchNorm2d` does the same thing with differentiable all-reduces: batch
statistics over the global batch, hence results that do not depend on how the batch is split
across processes.
"""

from __future__ import annotations

import datetime
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device_type: str, timeout_s: float = 600.0) -> bool:
    """Join the process group torchrun describes in the environment; False when not launched so.

    ``timeout_s`` (``train.dist_timeout``) bounds every collective: a process whose peer died
    or hangs fails after it instead of waiting forever."""
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"init_from_env(): `timeout_s` must be a positive number of seconds; "
                         f"got {timeout_s!r}. Fix: e.g. --set train.dist_timeout=600.")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


class RanksMissingError(RuntimeError):
    """The processes torchrun's environment announces did not all come (or disagree on it)."""


def wait_for_ranks(rank: int, world: int, timeout_s: float, prog: str,
                   every_s: float | None = None) -> None:
    """Check in with the other ``world - 1`` processes through torchrun's store
    (MASTER_ADDR / MASTER_PORT) without a process group: each rank records its WORLD_SIZE,
    then waits at most ``timeout_s`` for the others, printing "waiting for rank k ..." every
    ``every_s`` seconds (default: 10, or a quarter of a shorter timeout). A rank that never comes, or one started with another WORLD_SIZE, is
    a :class:`RanksMissingError` naming it and the fix (instead of a silent wait for hours
    and, with images shared out, a folder half segmented with exit code 0)."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not addr or not port:
        raise RanksMissingError(
            f"WORLD_SIZE={world} (RANK={rank}) is set but MASTER_ADDR / MASTER_PORT are not: "
            f"this process was not started by torchrun, and no other process will come. "
            f"Fix: unset WORLD_SIZE and RANK for one process, or start {prog} with torchrun "
            f"--nproc_per_node={world} -m {prog} ...")
    # under torchrun's elastic agent the store at MASTER_PORT is the agent's (every rank is
    # a client); otherwise rank 0 hosts it
    master = rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    every_s = every_s if every_s is not None else min(10.0, timeout_s / 4)
    t0 = time.monotonic()
    try:
        store = dist.TCPStore(addr, int(port), None, master,
                              timeout=datetime.timedelta(seconds=timeout_s),
                              wait_for_workers=False)
    except Exception as exc:  # rank 0 (the store) never came, or the port is taken
        raise RanksMissingError(
            f"rank {rank}: cannot reach rank 0's store at {addr}:{port} within "
            f"{timeout_s:.0f} s ({type(exc).__name__}: {exc}). Fix: start all {world} "
            f"processes (torchrun --nproc_per_node={world}), or raise --set "
            f"train.dist_timeout=SECONDS.") from exc
    store = dist.PrefixStore(f"{prog}/checkin", store)
    store.set(f"world{rank}", str(world))

    def worlds() -> dict[int, int]:
        here = [k for k in range(world) if store.check([f"world{k}"])]
        return {k: int(store.get(f"world{k}").decode()) for k in here}

    def wait(what: str, ready) -> dict[int, int]:
        last = time.monotonic()
        while True:
            seen = worlds()
            other = {k: w for k, w in seen.items() if w != world}
            if other:
                raise RanksMissingError(
                    f"rank {rank} has WORLD_SIZE={world} but rank(s) "
                    f"{', '.join(f'{k} has {w}' for k, w in sorted(other.items()))}. Fix: "
                    f"start every process with the same WORLD_SIZE (torchrun "
                    f"--nproc_per_node=N sets it).")
            missing = ready(seen)
            if not missing:
                return seen
            now = time.monotonic()
            if now - t0 > timeout_s:
                raise RanksMissingError(
                    f"rank {rank}: rank(s) {', '.join(map(str, missing))} of WORLD_SIZE={world} "
                    f"did not {what} within {timeout_s:.0f} s (train.dist_timeout). Fix: start "
                    f"all {world} processes (torchrun --nproc_per_node={world}), unset "
                    f"WORLD_SIZE for one process, or raise --set train.dist_timeout=SECONDS.")
            if now - last >= every_s:
                print(f"{prog}: rank {rank}: waiting for rank(s) "
                      f"{', '.join(map(str, missing))} to {what} "
                      f"({now - t0:.0f}/{timeout_s:.0f} s) ...", file=sys.stderr, flush=True)
                last = now
            time.sleep(0.05)

    wait("start", lambda seen: [k for k in range(world) if k not in seen])
    # the store lives in rank 0: rank 0 leaves only once every rank has seen everyone
    store.set(f"seen{rank}", "1")
    if master:
        wait("check in", lambda seen: [k for k in range(world)
                                       if not store.check([f"seen{k}"])])


_LOST_PEER_HINTS = ("gloo", "nccl", "connection reset", "connection closed", "timed out",
                    "timeout", "broken pipe", "socket")


def lost_peer(exc: BaseException) -> bool:
    """True when ``exc``, raised inside a multi-process job, says that the process group broke
    (a peer died or stopped answering) rather than a bug of this process."""
    if world()[1] <= 1:
        return False
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, RuntimeError) and any(h in text for h in _LOST_PEER_HINTS)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of every process (CPU or GPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = (0, 2, 3)
        # Half inputs are normalised in float32; float32/float64 in their own precision.
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        c = x.shape[1]
        count = torch.full((1,), float(x.numel() // c), device=x.device, dtype=xf.dtype)
        # Two passes (mean, then centred squares) as the native BatchNorm does: the one-pass
        # E[x^2] - E[x]^2 loses precision when |mean| >> std.
        first = all_reduce(torch.cat([xf.sum(dims), count]))
        n = first[-1]
        mean = first[:c] / n
        centred = xf - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dims)) / n
        with torch.no_grad():
            if self.track_running_stats and self.running_mean is not None:
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(
                    self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = centred * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device_type: str) -> nn.Module:
    """BatchNorm -> SyncBatchNorm on CUDA, -> AllReduceBatchNorm2d on the CPU."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _swap_bn(model)


def _swap_bn(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        new = AllReduceBatchNorm2d(module.num_features, module.eps, module.momentum,
                                   module.affine, module.track_running_stats)
        ref = module.weight if module.affine else module.running_mean
        if ref is not None:
            new = new.to(device=ref.device, dtype=ref.dtype)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _swap_bn(child))
    return module
