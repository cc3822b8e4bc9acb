"""torch.distributed set-up for runs started by torchrun (gloo on CPU, NCCL on GPU)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init(device: torch.device) -> None:
    """Join torchrun's process group. torch._dynamo is imported first, because importing it while a
    group exists (the first optimizer does, lazily) keeps a reference to that group that outlives
    `destroy_process_group`: its gloo worker threads then live on into interpreter finalization, where
    one releasing a finished collective that holds Python tensors must take the GIL, is killed inside
    a noexcept destructor and aborts the process ("terminate called without an active exception",
    exit -6 after a completed run; found from a core dump, see tests/train/test_trainer.py)."""
    if world()[1] > 1 and not dist.is_initialized():
        import torch._dynamo  # noqa: F401  (before the group exists; see above)

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def shutdown() -> None:
    """Wait for every rank, then destroy the process group, which joins gloo's worker threads."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """All-reduce the gradients of `params` as one flat buffer and divide by the world size."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's weights and buffers."""
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def all_gather(t: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor, back on the CPU."""
    t = t.to(device)
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def rank0_says(flag: bool, device: torch.device) -> bool:
    """Rank 0's flag on every rank (one tiny broadcast), so decisions from clocks agree across ranks."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())
