"""Benchmark tasks behind one interface: ``build_task(cfg.task)`` returns a ``Task``.

See ``experiments.tasks.base.Task`` for what the training loop may call.
"""

from __future__ import annotations

from collections.abc import Mapping

from experiments.tasks.base import DataValidationError, Task
from experiments.tasks.glue import GlueTask
from experiments.tasks.squad import SquadTask, postprocess_qa_predictions
from experiments.tasks.summarization import SummarizationTask

TASK_FAMILIES: dict[str, type[Task]] = {
    "glue": GlueTask,
    "squad": SquadTask,
    "summarization": SummarizationTask,
}


def build_task(task_cfg: Mapping) -> Task:
    """The ``Task`` for a task config, chosen by its ``family`` key."""
    family = task_cfg.get("family")
    if family not in TASK_FAMILIES:
        raise ValueError(f"task.family must be one of {sorted(TASK_FAMILIES)}, got {family!r}")
    return TASK_FAMILIES[family](task_cfg)


__all__ = [
    "TASK_FAMILIES",
    "DataValidationError",
    "GlueTask",
    "SquadTask",
    "SummarizationTask",
    "Task",
    "build_task",
    "postprocess_qa_predictions",
]
