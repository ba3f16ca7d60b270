"""Built-in tasks; importing this package registers them."""

from mecharule.tasks.builtin import arithmetic, bon_jailbreak, hans_nli  # noqa: F401
