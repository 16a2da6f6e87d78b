"""torchrun environment, agreed decisions, metric reduction and collective timeouts (DDP on NCCL or gloo).

The rule every multi-process path here follows: a collective (barrier, broadcast, all-reduce, DDP's
gradient sync) is reached by every rank, in the same order. A decision that gates one (a better
validation score, a stop request, a failure, a checkpoint to resume) is therefore never taken by one
rank alone: it is made on rank 0 and broadcast (:func:`broadcast_object`, :func:`on_main`), or made by
all ranks together (:func:`any_rank`, :func:`together`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

#: Where this process is (``at``): named in the error when a collective times out.
_where = "starting up"
_timeout_s: float | None = None


class RankError(RuntimeError):
    """Another rank failed: raised on the ranks that did not, instead of a hang (rank 0 reports it)."""


def init_distributed(device: str, timeout_s: float = 1800.0) -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group when launched by torchrun.

    ``timeout_s``: how long any collective may wait for the slowest rank before it fails (gloo raises;
    NCCL's watchdog aborts the process with the collective it was in)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, 0
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
    global _timeout_s
    _timeout_s = timeout_s
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    return rank, world, local


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def at(where: str) -> None:
    """Record what this process is doing now (for the timeout error); cheap enough for every step."""
    global _where
    _where = where


def describe_failure(e: BaseException) -> str | None:
    """A readable line for a failed collective (timed out, or a peer gone), None for any other error.

    gloo raises ``Timed out waiting ...`` / ``Connection closed by peer``; NCCL's watchdog usually aborts
    the process itself, with its own message naming the collective."""
    if not is_distributed():
        return None
    text = str(e)
    if "Timed out waiting" in text or (isinstance(e, dist.DistBackendError) and "timeout" in text.lower()):
        return (f"rank {rank()}: a collective timed out after {_timeout_s:.0f} s while {_where}: another rank "
                f"stopped or is stuck elsewhere. If a step really takes that long (saving a large model, a "
                f"slow validation), raise --dist-timeout")
    if "closed by peer" in text or "Connection reset by peer" in text:
        return f"rank {rank()}: another rank exited while this one was {_where} (its error is above)"
    return None


def any_rank(*flags: bool, device: torch.device | None = None) -> tuple[bool, ...]:
    """Each flag OR-ed over all ranks, in one all-reduce (every rank must call this at the same point)."""
    if not is_distributed():
        return tuple(bool(f) for f in flags)
    device = device or _collective_device()
    t = torch.tensor([float(bool(f)) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (what the others pass is ignored)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 only; its result, or its error, on every rank (the others wait for it)."""
    result: Any = None
    error: BaseException | None = None
    if is_main_process():
        try:
            result = fn()
        except Exception as e:
            error = e
    result, message = broadcast_object((result, None if error is None else f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    if message is not None:
        raise RankError(message)
    return result


@contextlib.contextmanager
def together(what: str) -> Iterator[None]:
    """Run the block on every rank, then agree: if it failed anywhere, it fails everywhere.

    The block must not contain collectives itself (a failed rank would never reach them)."""
    error: BaseException | None = None
    try:
        yield
    except Exception as e:
        error = e
    if not is_distributed():
        if error is not None:
            raise error
        return
    messages = gather_objects(None if error is None else f"{type(error).__name__}: {error}")
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if not failed:
        return
    if error is not None and (rank() == 0 or messages[0] is None):
        raise error  # this rank's own error, printed by this rank
    r, m = failed[0]  # rank 0 prints the first failure; a rank that failed like rank 0 stays quiet
    raise RankError(f"rank {r} failed while {what}: {m}")


def reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar metrics over ranks (for logging only)."""
    if not is_distributed():
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist(), strict=True))


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Gradients averaged over ranks, as DDP does, for parameters DDP does not hold (prompt tuning)."""
    if not is_distributed():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BN statistics) on every rank."""
    if not is_distributed():
        return
    for b in module.buffers():
        dist.broadcast(b, src=0)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank (a list of length world_size)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where small collective tensors live: the current GPU on NCCL, the CPU on gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
