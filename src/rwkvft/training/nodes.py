"""Several machines (--num_nodes > 1): say what the run waits for, and stop waiting.

Lightning reads the rendezvous from its own environment (MASTER_ADDR, MASTER_PORT, NODE_RANK,
set by the launcher or the user on every node); we only report it and bound the wait with
--dist_timeout, instead of torch's silent 30-minute default.
"""
from __future__ import annotations

import datetime

from ..errors import UserError


def multi_node_strategy(cfg):
    """DDP with the --dist_timeout rendezvous limit (DeepSpeed strategies keep their own)."""
    if cfg.strategy not in ("auto", "ddp", "ddp_spawn"):
        return cfg.strategy
    from lightning.pytorch.strategies import DDPStrategy
    kw = {"broadcast_buffers": False} if cfg.quant != "none" else {}
    start = "spawn" if cfg.strategy == "ddp_spawn" else "popen"
    return DDPStrategy(timeout=datetime.timedelta(seconds=cfg.dist_timeout),
                       start_method=start, **kw)


def _rendezvous(trainer) -> tuple[str, int, int]:
    env = trainer.strategy.cluster_environment
    return env.main_address, env.main_port, env.node_rank()


def announce_wait(trainer, cfg) -> None:
    """One line before the rendezvous: which node this is, whom it waits for, where."""
    if cfg.num_nodes <= 1:
        return
    addr, port, node = _rendezvous(trainer)
    print(f"rwkvft: node {node} of {cfg.num_nodes}: waiting up to {cfg.dist_timeout:g}s for "
          f"{cfg.num_nodes - 1} other node(s) to join at {addr}:{port} (run the same command on "
          f"each node with MASTER_ADDR, MASTER_PORT and NODE_RANK set)", flush=True)


def wait_timed_out(e: BaseException, trainer, cfg) -> UserError | None:
    """A UserError for a rendezvous that timed out; None for any other error."""
    import torch.distributed as dist
    if cfg.num_nodes <= 1 or not isinstance(e, getattr(dist, "DistError", RuntimeError)) \
            or "timed out" not in str(e).lower():
        return None
    addr, port, node = _rendezvous(trainer)
    return UserError(f"node {node}: the other {cfg.num_nodes - 1} node(s) did not join at "
                     f"{addr}:{port} within --dist_timeout {cfg.dist_timeout:g}s; start the same "
                     f"command on every node (NODE_RANK 0..{cfg.num_nodes - 1}, MASTER_ADDR = "
                     f"node 0's address), or train on one machine with --num_nodes 1")
