"""Run one tiny training under torchrun and dump what each rank ended with (DDP test helper).

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_probe.py OUT_DIR override ...

Each rank writes ``OUT_DIR/rank<r>.pt``: the kept-triplet masks and λ of every SVD matrix,
the rank pattern, the evaluations and the last training loss. Dropout is configured off by
the caller (through the model config) so that ranks and a single-process run are comparable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from experiments.runner import PROJECT_ROOT, _build, register_resolvers, resolve


def main(out_dir: str, overrides: list[str]) -> None:
    register_resolvers()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    rank = int(os.environ.get("RANK", "0"))
    trainer, handle, _ = _build(cfg, resolve(cfg), Path(out_dir) / f"ckpt{rank}", None)
    state = trainer.train()
    svd = handle.svd_modules
    torch.save({
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "total_steps": trainer.total_steps,
        "masks": {n: (m.lora_E.detach() != 0).flatten() for n, m in svd.items()},
        "lambdas": {n: m.lora_E.detach().clone().flatten() for n, m in svd.items()},
        "pattern": handle.rank_pattern(),
        "evals": state.evals,
        "train_loss": state.train_loss,
    }, Path(out_dir) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
