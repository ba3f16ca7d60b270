"""The name registry: 'did you mean' on unknown names, built-ins imported on the first lookup (so
tasks/base.py never imports the built-in tasks), entry points of installed packages, and
``module:factory`` names imported on lookup."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mecharule.errors import ConfigError, UnknownNameError
from mecharule.registry import Registry


def _module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def test_an_unknown_name_lists_the_valid_ones_and_the_closest():
    things: Registry[int] = Registry("thing")
    things.register("alpha")(1)
    things.register("beta")(2)
    with pytest.raises(UnknownNameError) as near:
        things.get("alpah")
    assert str(near.value) == "unknown thing 'alpah' (did you mean 'alpha'?); valid things: alpha, beta"
    with pytest.raises(UnknownNameError) as far:
        things.get("zzz")
    assert "did you mean" not in str(far.value) and "valid things: alpha, beta" in str(far.value)


def test_registering_another_object_under_a_taken_name_fails():
    things: Registry[int] = Registry("thing")
    things.register("a")(1)
    things.register("a")(1)  # the same object again is fine (a module imported twice)
    with pytest.raises(ValueError, match="'a' is already registered"):
        things.register("a")(2)


def test_builtins_are_imported_on_the_first_lookup_only(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    things: Registry[str] = Registry("thing", builtin="builtin_things_for_test")
    _module(
        tmp_path,
        "builtin_things_for_test",
        """
        from test_registry_holder import THINGS
        THINGS.register("one")("the first")
        """,
    )
    holder = type(sys)("test_registry_holder")
    holder.THINGS = things  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "test_registry_holder", holder)
    assert "builtin_things_for_test" not in sys.modules
    assert things.get("one") == "the first"
    assert "builtin_things_for_test" in sys.modules
    monkeypatch.delitem(sys.modules, "builtin_things_for_test")


def test_module_colon_name_is_imported_on_lookup(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _module(tmp_path, "outside_factories", "def make(x=1):\n    return ('made', x)\n")
    things: Registry[object] = Registry("thing", importable=True)
    factory = things.get("outside_factories:make")
    assert factory() == ("made", 1)  # type: ignore[operator]
    with pytest.raises(UnknownNameError, match=r"has no 'mak' \(did you mean 'make'\?\)"):
        things.get("outside_factories:mak")
    with pytest.raises(UnknownNameError, match="no module named 'no_such_module_x'; install it or put"):
        things.get("no_such_module_x:make")
    with pytest.raises(UnknownNameError, match="unknown thing 'outside_factories:make'"):
        Registry("thing").get("outside_factories:make")  # not importable: an ordinary unknown name


def _fake_distribution(folder: Path, group: str, entries: dict[str, str]) -> None:
    info = folder / "fake_mecharule_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-mecharule-plugin\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")


def test_entry_points_add_names_loaded_on_lookup(tmp_path, monkeypatch):
    _module(tmp_path, "plugin_things", "def make():\n    return 'from a plugin'\n")
    _fake_distribution(
        tmp_path, "test.things", {"plugged": "plugin_things:make", "broken": "plugin_things:nope"}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    things: Registry[object] = Registry("thing", entry_points="test.things")
    things.register("local")("here")
    assert things.names() == ["broken", "local", "plugged"]
    assert "plugged" in things and "plugin_things" not in sys.modules  # listed, not imported
    assert things.sources()["plugged"] == "entry point plugin_things:make (fake-mecharule-plugin)"
    assert things.get("plugged")() == "from a plugin"  # type: ignore[operator]
    with pytest.raises(UnknownNameError, match=r"entry point plugin_things:nope .* cannot be loaded"):
        things.get("broken")
    with pytest.raises(UnknownNameError, match=r"did you mean 'plugged'\?"):
        things.get("pluged")


TASK_SOURCE = """
import numpy as np
import pandas as pd


class Echo:
    name = "echo"
    max_new_tokens = 2
    positive_label = "correct"
    metadata_columns = ()
    group_column = None

    def __init__(self, n: int = 3):
        self.n = n

    def options(self):
        return {"n": self.n}

    def prompts(self):
        return pd.DataFrame({"prompt": [f"{i}=" for i in range(self.n)]})

    def score(self, prompts, answers):
        return np.array([a == p[:-1] for p, a in zip(prompts["prompt"], answers)])

    def seed_features(self):
        return []


def not_a_task(n: int = 3):
    return {"n": n}
"""


def test_make_task_takes_tasks_from_outside_the_package(tmp_path, monkeypatch):
    from mecharule.tasks.base import TASK_ENTRY_POINTS, make_task

    _module(tmp_path, "echo_task", TASK_SOURCE)
    _fake_distribution(tmp_path, TASK_ENTRY_POINTS, {"echo": "echo_task:Echo"})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert make_task("echo_task:Echo", {"n": 5}).options() == {"n": 5}
    assert len(make_task("echo", {"n": 4}).prompts()) == 4  # the entry point
    with pytest.raises(ConfigError, match="takes no option 'm'"):
        make_task("echo_task:Echo", {"m": 5})  # options are checked like a built-in task's
    with pytest.raises(ConfigError, match="returned a dict that lacks name, max_new_tokens"):
        make_task("echo_task:not_a_task")
    with pytest.raises(UnknownNameError, match=r"unknown task 'arithmetc' \(did you mean 'arithmetic'\?\)"):
        make_task("arithmetc")


def test_the_task_interface_does_not_import_the_builtin_tasks():
    code = (
        "import sys\n"
        "import mecharule.tasks.base as base\n"
        "assert 'mecharule.tasks.builtin' not in sys.modules, 'imported at module level'\n"
        "print(base.TASKS.names())\n"
        "assert 'mecharule.tasks.builtin.arithmetic' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "'arithmetic', 'bon_jailbreak', 'hans_nli'" in done.stdout


def test_a_misspelt_extractor_gets_did_you_mean():
    from mecharule.rules.scoring import make_extractor

    with pytest.raises(UnknownNameError, match=r"unknown extractor 'rulshap' \(did you mean 'ruleshap'\?\)"):
        make_extractor("rulshap", 0, {})
