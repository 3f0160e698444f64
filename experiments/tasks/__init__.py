"""Benchmark tasks behind one interface: ``build_task(cfg.task)`` returns a ``Task``.

A task family is a registered ``Task`` subclass (``experiments.tasks.base.Task``: typed config,
head, collate, evaluation, metrics, the budget families and architectures it accepts, its PEFT
task type), found by name like method kinds: built in, from a task config's ``module:``, or from
the ``adalora.task_families`` entry-point group (``experiments.tasks.registry``, docs/tasks.md).
"""

from __future__ import annotations

from experiments.tasks.base import DataValidationError, Task
from experiments.tasks.causal_lm import CausalLMTask
from experiments.tasks.config import TaskConfig, TaskConfigError
from experiments.tasks.glue import GlueTask
from experiments.tasks.registry import (
    ENTRY_POINT_GROUP,
    build_task,
    family_of,
    get_family,
    peft_task_type_for_head,
    register_task_family,
    registered_families,
)
from experiments.tasks.squad import SquadTask, postprocess_qa_predictions
from experiments.tasks.summarization import SummarizationTask

__all__ = [
    "ENTRY_POINT_GROUP",
    "CausalLMTask",
    "DataValidationError",
    "GlueTask",
    "SquadTask",
    "SummarizationTask",
    "Task",
    "TaskConfig",
    "TaskConfigError",
    "build_task",
    "family_of",
    "get_family",
    "peft_task_type_for_head",
    "postprocess_qa_predictions",
    "register_task_family",
    "registered_families",
]
