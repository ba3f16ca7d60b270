"""Built-in tasks; importing this package registers them."""

from mecharule.tasks.builtin import arithmetic  # noqa: F401
