"""Run one tiny training under torchrun and dump what each rank ended with (DDP test helper).

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_probe.py OUT_DIR override ... [--then override ...]

Each rank writes ``OUT_DIR/rank<r>.pt``: the kept-triplet masks and λ of every SVD matrix,
the rank pattern, the evaluations and the last training loss. Dropout is configured off by
the caller (through the model config) so that ranks and a single-process run are comparable.

``PROBE_NAN_AT=<rank>:<step>`` is a fault: that rank's training loss is NaN at that optimiser step
(the others' stay finite); each rank then records the step at which its loop stopped as diverged.

``--then`` trains a second run in the same processes, with the overrides after it added, into
``OUT_DIR/then/rank<r>.pt``: two runs compared under DDP pay one launch (interpreters, imports and
the process group), not two.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from experiments.runner import PROJECT_ROOT, _build, register_resolvers, resolve
from experiments.training import Diverged


def inject_nan(trainer, rank: int) -> None:
    """A NaN loss on this rank at the step ``PROBE_NAN_AT`` names, if it names this rank."""
    where = os.environ.get("PROBE_NAN_AT")
    if not where or int(where.split(":")[0]) != rank:
        return
    step = int(where.split(":")[1])

    def poison(_module, _inputs, output):
        if trainer.state.global_step == step and output.loss is not None:
            output.loss = output.loss * float("nan")
        return output

    trainer.model.register_forward_hook(poison)


def main(out_dir: str, args: list[str]) -> None:
    register_resolvers()
    overrides, then = (args[:args.index("--then")], args[args.index("--then") + 1:]) if "--then" in args else (args, None)
    probe(Path(out_dir), overrides)
    if then is not None:
        probe(Path(out_dir) / "then", [*overrides, *then])


def probe(out_dir: Path, overrides: list[str]) -> None:
    """Train one run on this rank and write what it ended with to ``out_dir/rank<r>.pt``."""
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    rank = int(os.environ.get("RANK", "0"))
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer, handle, _ = _build(cfg, resolve(cfg), out_dir / f"ckpt{rank}", None)
    inject_nan(trainer, rank)
    diverged_at = None
    try:
        trainer.train()
    except Diverged:
        diverged_at = trainer.state.global_step
    state = trainer.state
    svd = handle.svd_modules
    torch.save({
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "total_steps": trainer.total_steps,
        "masks": {n: (m.lora_E.detach() != 0).flatten() for n, m in svd.items()},
        "lambdas": {n: m.lora_E.detach().clone().flatten() for n, m in svd.items()},
        "pattern": handle.rank_pattern(),
        "evals": state.evals,
        "train_loss": state.train_loss,
        "diverged_at": diverged_at,
    }, out_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
