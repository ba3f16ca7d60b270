"""Tasks: prompts + scoring + seed features."""

from mecharule.tasks.base import TASKS, Task, make_task

__all__ = ["TASKS", "Task", "make_task"]
