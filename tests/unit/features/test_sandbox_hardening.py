"""Sandbox hardening: accurate failure reasons, the per-row guard, the round budget, and process
protections that hold even when the AST check is bypassed.

Tests that rely on a protection say which one and skip, with the reason, where this system does
not provide it (:func:`probe_sandbox` asks a real worker). No assertion here measures time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mecharule.errors import ConfigError
from mecharule.features import sandbox_worker
from mecharule.features.sandbox import (
    ROUND_BUDGET_EXHAUSTED,
    ProposedFeature,
    RowsFile,
    SandboxLimits,
    probe_sandbox,
    run_feature_source,
    score_proposed_features,
)
from mecharule.features.sandbox_process import death_reason, worker_command, worker_spec

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX resource limits")

PROMPTS = pd.DataFrame({"prompt": ["a", "bb", "ccc", "dddd"]})
LIMITS = SandboxLimits(wall_seconds=60.0, cpu_seconds=10, memory_mb=64)
EPERM = 1
# The real os module's globals, through a dunder chain: only reachable with the AST check off.
OS_GLOBALS = (
    "    for cls in ().__class__.__bases__[0].__subclasses__():\n"
    "        if cls.__name__ == '_wrap_close':\n"
    "            os = cls.__init__.__globals__\n"
)
LIBC = "ct = os['sys'].modules['ctypes']\nlibc = ct.CDLL(None, use_errno=True)\n"


def source(*lines: str, prefix: str = "") -> str:
    body = "".join(f"    {part}\n" for line in lines for part in line.splitlines())
    return "def my_feature(prompt, info):\n" + prefix + body


def feature(label: str, *lines: str, prefix: str = "", round_index: int = 0) -> ProposedFeature:
    return ProposedFeature(label, label, source(*lines, prefix=prefix), round_index)


def reasons(*proposals: ProposedFeature, limits: SandboxLimits = LIMITS, unchecked: bool = False):
    accepted, rejected = score_proposed_features(
        list(proposals), PROMPTS, limits=limits, _unchecked=unchecked
    )
    return {f.name: f.compute(PROMPTS) for f in accepted}, {r.label: r.reason for r in rejected}


@pytest.fixture(scope="module")
def protections() -> dict[str, bool]:
    return dict(probe_sandbox().protections)


def require(protections: dict[str, bool], name: str) -> None:
    if not protections.get(name):
        pytest.skip(f"the {name} protection is not available on this system (probe: {protections})")


# -- 1. accurate reasons -------------------------------------------------------------------------


def test_death_reason_names_the_signal_and_keeps_limits_apart():
    limits = SandboxLimits(wall_seconds=5.0, cpu_seconds=2)
    assert death_reason(-signal.SIGSEGV, 0.01, limits) == "killed by signal SIGSEGV"  # no limit is blamed
    cpu_limit = "exceeded the CPU limit of 2 s (killed by "
    assert death_reason(-signal.SIGXCPU, 2.0, limits) == cpu_limit + "SIGXCPU after 2.0 s of CPU time)"
    assert death_reason(-signal.SIGKILL, 3.0, limits) == cpu_limit + "SIGKILL after 3.0 s of CPU time)"
    below = death_reason(-signal.SIGKILL, 0.2, limits)  # not the CPU limit: e.g. the OOM killer
    assert below.startswith("killed by signal SIGKILL") and "below the CPU limit" in below
    assert death_reason(3, 0.1, limits) == "worker exited with status 3 without a result"


def test_a_segfaulting_worker_is_reported_by_its_signal(protections):
    require(protections, "no_new_privs")  # the worker loaded ctypes, which this attack borrows
    _, rejected = reasons(
        feature("segfault", "return os['sys'].modules['ctypes'].string_at(0)", prefix=OS_GLOBALS),
        unchecked=True,
    )
    assert rejected["segfault"].startswith("killed by signal SIGSEGV")


def test_a_cpu_kill_is_a_cpu_limit_even_when_sigxcpu_is_ignored():
    ignore_sigxcpu = f"os['sys'].modules['builtins'].__import__('_signal').signal({signal.SIGXCPU}, 1)"
    _, rejected = reasons(
        feature("ignores SIGXCPU", ignore_sigxcpu, "while True:", "    pass", prefix=OS_GLOBALS),
        limits=SandboxLimits(wall_seconds=120.0, cpu_seconds=1),
        unchecked=True,
    )
    # the hard limit (soft + 1 s) ends it with SIGKILL; its CPU time shows that was the CPU limit
    assert rejected["ignores SIGXCPU"].startswith("exceeded the CPU limit of 1 s (killed by SIGKILL")


def test_memory_errors_name_the_memory_limit():
    _, rejected = reasons(feature("memory bomb", "return len('x' * (1 << 29))"))
    assert "first: MemoryError (memory limit 64 MB)" in rejected["memory bomb"]


def test_values_that_are_not_numbers_are_reported_as_such():
    _, rejected = reasons(
        feature("nan", "return math.nan"),
        feature("inf", "return -math.inf * len(prompt)"),
        feature("text", "return prompt"),
        feature("none", "return None"),
        feature("mixed", "return [None, math.inf, 'x', [1]][len(prompt) - 1]"),
    )
    no_number = "returned no number on any of the 4 rows: "
    assert rejected["nan"] == no_number + "returned non-finite values on 4 of 4 rows (NaN or inf)"
    assert rejected["inf"] == no_number + "returned non-finite values on 4 of 4 rows (NaN or inf)"
    assert rejected["text"] == no_number + "returned a str on 4 of 4 rows"
    assert rejected["none"] == no_number + "returned None on 4 of 4 rows"
    assert rejected["mixed"] == no_number + (
        "returned non-finite values on 1 of 4 rows (NaN or inf); "
        "returned non-numbers (str, list) on 2 of 4 rows; returned None on 1 of 4 rows"
    )


# -- 2. the per-row guard ------------------------------------------------------------------------


def test_describe_survives_exceptions_whose_message_cannot_be_made():
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert sandbox_worker.describe(ValueError(10**5000)) == "ValueError: <message not printable: ValueError>"
    assert sandbox_worker.describe(Unprintable()) == "Unprintable: <message not printable: RuntimeError>"
    assert len(sandbox_worker.describe(ValueError("x" * 10**6))) == sandbox_worker.ERROR_CHARS


def test_an_exception_costs_only_its_row(tmp_path):
    rows_path = tmp_path / "rows.json"
    rows_path.write_text(json.dumps([[p, {}] for p in PROMPTS["prompt"]]), encoding="utf-8")
    src = source("if len(prompt) == 2:", "    raise ValueError(10**5000)", "return len(prompt)")
    run = run_feature_source(src, RowsFile(rows_path, 4), LIMITS)
    np.testing.assert_array_equal(run.values, [1.0, np.nan, 3.0, 4.0])
    assert run.n_errors == 1 and run.error == "ValueError: <message not printable: ValueError>"


def test_features_failing_on_more_than_half_the_rows_are_rejected_with_count_and_first_error():
    values, rejected = reasons(
        feature("half", "if len(prompt) <= 2:", "    raise ValueError(10**5000)", "return 1"),
        feature("most", "if len(prompt) <= 3:", "    raise ValueError('x' * 10**5)", "return 1"),
        feature("all", "raise ValueError(10**5000)"),
    )
    np.testing.assert_array_equal(values["half"], [np.nan, np.nan, 1.0, 1.0])  # 2 of 4 is not > 50 %
    assert rejected["most"].startswith("raised on 3 of 4 rows (more than 50%); first: ValueError: xxx")
    assert len(rejected["most"]) < 300  # the message is cut
    assert rejected["all"] == (
        "raised on 4 of 4 rows (more than 50%); first: ValueError: <message not printable: ValueError>"
    )


# -- 3. the round budget -------------------------------------------------------------------------


def test_the_round_budget_rejects_what_is_left_and_each_round_has_its_own():
    limits = SandboxLimits(wall_seconds=600.0, cpu_seconds=600, round_seconds=3.0, n_jobs=1)
    values, rejected = reasons(
        feature("endless", "while True:", "    pass"),  # outlives the round's budget
        feature("after it", "return 1"),  # one job at a time: starts after the budget is spent
        feature("next round", "return len(prompt)", round_index=1),
        limits=limits,
    )
    assert rejected == {"endless": ROUND_BUDGET_EXHAUSTED, "after it": ROUND_BUDGET_EXHAUSTED}
    np.testing.assert_array_equal(values["next_round"], [1, 2, 3, 4])
    with pytest.raises(ConfigError, match="round_seconds"):
        SandboxLimits(round_seconds=0)


# -- 5. process protections ----------------------------------------------------------------------


def test_the_worker_leads_its_own_session_and_is_not_dumpable(protections):
    require(protections, "not_dumpable")
    values, rejected = reasons(
        feature("session", "return os['getsid'](0) == os['getpid']() == os['getpgid'](0)", prefix=OS_GLOBALS),
        feature("dumpable", LIBC + "return libc.prctl(3, 0, 0, 0, 0)", prefix=OS_GLOBALS),  # PR_GET_DUMPABLE
        feature("no new privs", LIBC + "return libc.prctl(39, 0, 0, 0, 0)", prefix=OS_GLOBALS),
        unchecked=True,
    )
    assert rejected == {}
    np.testing.assert_array_equal(values["session"], [1, 1, 1, 1])
    np.testing.assert_array_equal(values["dumpable"], [0, 0, 0, 0])
    np.testing.assert_array_equal(values["no_new_privs"], [1, 1, 1, 1])


def test_seccomp_denies_ptrace_and_sockets(protections):
    require(protections, "seccomp")
    traceme = LIBC + "r = libc.ptrace(0, 0, 0, 0)\nreturn ct.get_errno() if r < 0 else -1"
    # closing stdin frees a descriptor under RLIMIT_NOFILE; seccomp still refuses the socket
    open_socket = LIBC + "libc.close(0)\nr = libc.socket(2, 1, 0)\nreturn ct.get_errno() if r < 0 else -1"
    values, _ = reasons(
        feature("traceme", traceme, prefix=OS_GLOBALS),
        feature("socket", open_socket, prefix=OS_GLOBALS),
        unchecked=True,
    )
    np.testing.assert_array_equal(values["traceme"], [EPERM] * 4)
    np.testing.assert_array_equal(values["socket"], [EPERM] * 4)


KILL_PARENT = source(
    "try:",
    f"    os['kill']({os.getpid()}, {int(signal.SIGUSR1)})",  # the test process, by pid
    "except Exception as exc:",
    "    return exc.errno",
    "return 0",
    prefix=OS_GLOBALS,
)


def run_worker_directly(src: str, tmp_path: Path, disable: tuple[str, ...] = ()) -> dict:
    """Start the worker as the sandbox does, but bypassing the AST check and with ``disable``."""
    spec = worker_spec(src, "my_feature", LIMITS, disable=disable)
    done = subprocess.run(
        worker_command(spec), input=b'[["x", {}]]', capture_output=True, cwd=tmp_path,
        env={"PATH": os.defpath}, start_new_session=True, timeout=120, check=False,
    )  # fmt: skip
    return json.loads(done.stdout)


@pytest.fixture
def sigusr1_received():
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: received.append(number))
    try:
        yield received
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_control_an_unprotected_worker_does_signal_the_parent(sigusr1_received, tmp_path):
    """Shows the check below can fail: with root kept and seccomp off, the signal arrives."""
    message = run_worker_directly(KILL_PARENT, tmp_path, disable=("drop_root", "seccomp"))
    assert message["values"] == [0.0] and sigusr1_received == [signal.SIGUSR1]


def test_seccomp_alone_stops_the_worker_signalling_the_parent(protections, sigusr1_received, tmp_path):
    require(protections, "seccomp")
    message = run_worker_directly(KILL_PARENT, tmp_path, disable=("drop_root",))  # same uid as us
    assert message["protections"]["seccomp"] is True
    assert message["values"] == [float(EPERM)] and sigusr1_received == []


def test_the_deployed_worker_cannot_signal_the_parent(protections, sigusr1_received, tmp_path):
    dropped_root = os.geteuid() == 0 and protections.get("non_root")
    if not (protections.get("seccomp") or dropped_root):
        pytest.skip("neither seccomp nor a drop from root separates the worker's uid from ours here")
    message = run_worker_directly(KILL_PARENT, tmp_path)
    assert message["values"] == [float(EPERM)] and sigusr1_received == []


def test_seccomp_program_denies_the_listed_calls_and_foreign_abis():
    for machine, (arch, numbers) in sandbox_worker.SECCOMP_TABLE.items():
        program = sandbox_worker.seccomp_program(machine)
        assert program is not None
        assert set(numbers) == set(sandbox_worker.DENIED_SYSCALLS)
        assert program[1][3] == arch and program[2] == program[-1]  # a foreign ABI is denied
        checks = [row for row in program if row[0] == sandbox_worker.BPF_JEQ_K][1:]
        for index, row in enumerate(checks):  # each match jumps to the final deny
            position = program.index(row)
            assert position + 1 + row[1] == len(program) - 1, (machine, index)
        assert {row[3] for row in checks} == set(numbers.values())
    assert sandbox_worker.seccomp_program("pdp11") is None
