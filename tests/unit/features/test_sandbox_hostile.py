"""The hostile suite: every attack is rejected or contained, and the benign features beside it survive.

Two batches. The first goes through both walls (AST check + confined process). The second skips
the AST check (test-only ``_unchecked``) to show that the process limits alone contain an
infinite loop, a memory bomb, a file write, a fork, a subprocess/socket import, a network
connection and a flood of output, with the untrusted code running as a non-root user.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mecharule.features.sandbox import (
    WORKER_PATH,
    ProposedFeature,
    SandboxLimits,
    score_proposed_features,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX resource limits")

# Every source this module runs carries this comment, so leaked workers of THIS test process can be
# found by command line even when other test processes run sandboxes at the same time.
OWNER = f"# owner {os.getpid()}"
PROMPTS = pd.DataFrame(
    {
        "prompt": ["12+3=", "7*8=", "100-1=", "5*5="],
        "operator": ["+", "*", "-", "*"],
        "a": [12, 7, np.nan, 5],
    }
)
BENIGN_VALUES = {
    "prompt_length": [5.0, 4.0, 6.0, 4.0],
    "is_multiplication": [0.0, 1.0, 0.0, 1.0],
    "a_value": [12.0, 7.0, np.nan, 5.0],
}
LIMITS = SandboxLimits(wall_seconds=2.0, memory_mb=128, n_jobs=4)

# Reaches the real os module's globals through a dunder chain (only possible with the AST check off).
OS_GLOBALS = (
    "    for cls in ().__class__.__bases__[0].__subclasses__():\n"
    "        if cls.__name__ == '_wrap_close':\n"
    "            os = cls.__init__.__globals__\n"
)


def feature(label: str, *lines: str, prefix: str = "") -> ProposedFeature:
    src = "def my_feature(prompt, info):\n" + prefix + "".join(f"    {line}\n" for line in lines) + OWNER
    return ProposedFeature(label, label, src)


BENIGN = [
    feature("prompt length", "return len(prompt)"),
    feature("is multiplication", "return info['operator'] == '*'"),
    feature("a value", "return info['a']"),
]


def live_workers() -> list[int]:
    """Processes (any user) whose command line runs the sandbox worker; Linux /proc only."""
    pids: list[int] = []
    if not Path("/proc").is_dir():
        return pids
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(WORKER_PATH).encode() in cmdline and OWNER.encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def check_benign(accepted) -> None:
    by_name = {f.name: f for f in accepted}
    for name, expected in BENIGN_VALUES.items():
        np.testing.assert_array_equal(by_name[name].compute(PROMPTS), np.array(expected))
    assert by_name["is_multiplication"].kind == "binary" and by_name["prompt_length"].kind == "count"


def check_parent_unharmed() -> None:
    assert live_workers() == []  # no worker or grandchild survives
    ok, _ = score_proposed_features(BENIGN[:1], PROMPTS, limits=LIMITS)  # still fully working
    assert [f.name for f in ok] == ["prompt_length"]


def test_hostile_proposals_are_rejected_or_contained(tmp_path):
    marker = tmp_path / "pwned"
    tmp_path.chmod(0o777)  # so that a write could only be stopped by the sandbox, not by permissions
    hostile = [
        feature("infinite loop", "while True:", "    pass"),
        feature("slow but legal", "total = 0", "for i in range(10**9):", "    total += i", "return total"),
        feature("memory bomb", "x = 'x' * 2**29", "return len(x)"),
        feature("recursion bomb", "return my_feature(prompt + 'x', info)"),
        feature("huge output", "return 'x' * 10**7"),
        feature("huge list", "return list(range(10**6))"),
        feature("dunder escape", "return ().__class__.__bases__[0].__subclasses__()"),
        feature(
            "fork via dunders",
            "return ().__class__.__base__.__subclasses__()[-1].__init__.__globals__['fork']()",
        ),
        feature("subprocess", "import subprocess", f"subprocess.run(['touch', '{marker}'])", "return 1"),
        feature("socket", "import socket", "return socket.create_connection(('127.0.0.1', 80))"),
        feature("file write", f"open('{marker}', 'w').write('x')", "return 1"),
        feature("eval", f"return eval(\"open('{marker}', 'w')\")"),
        feature("getattr dunder", "return getattr(prompt, '__class__')"),
        feature("frame walk", "g = (1 for _ in [0])", "return g.gi_frame.f_back.f_globals"),
    ]
    accepted, rejected = score_proposed_features([*BENIGN, *hostile], PROMPTS, limits=LIMITS)
    check_benign(accepted)
    assert [f.name for f in accepted] == list(BENIGN_VALUES)
    stopped = {r.label: (r.stage, r.reason) for r in rejected}
    assert set(stopped) == {h.label for h in hostile}
    expected = {
        "infinite loop": ("execution", "wall-clock limit"),
        "slow but legal": ("execution", "wall-clock limit"),
        "memory bomb": ("execution", "MemoryError"),
        "recursion bomb": ("execution", "RecursionError"),
        "huge output": ("execution", "returned a str on 4 of 4 rows"),
        "huge list": ("execution", "returned a list on 4 of 4 rows"),
        "dunder escape": ("validation", "starts with '_'"),
        "fork via dunders": ("validation", "starts with '_'"),
        "subprocess": ("validation", "Import"),
        "socket": ("validation", "Import"),
        "file write": ("validation", "'open'"),
        "eval": ("validation", "'eval'"),
        "getattr dunder": ("validation", "'getattr'"),
        "frame walk": ("validation", "introspection"),
    }
    for label, (stage, reason) in expected.items():
        assert stopped[label][0] == stage, (label, stopped[label])
        assert reason in stopped[label][1], (label, stopped[label])
    assert not marker.exists()
    check_parent_unharmed()


def test_process_limits_contain_attacks_even_without_the_ast_check(tmp_path):
    marker = tmp_path / "pwned"
    tmp_path.chmod(0o777)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.0)
    port = listener.getsockname()[1]
    escapes = [
        feature("infinite loop", "while True:", "    pass"),
        feature("memory bomb", "return len('x' * (1 << 29))"),
        feature(
            "file write",
            f"os['sys'].modules['builtins'].open({str(marker)!r}, 'w').write('x')",
            "return 1",
            prefix=OS_GLOBALS,
        ),
        feature("low-level file write", f"os['open']({str(marker)!r}, 0o101)", "return 1", prefix=OS_GLOBALS),
        feature("fork", "pid = os['fork']()", "return 1.0", prefix=OS_GLOBALS),
        feature(
            "subprocess",
            "sp = os['sys'].modules['builtins'].__import__('subprocess')",
            f"sp.run(['touch', {str(marker)!r}])",
            "return 1",
            prefix=OS_GLOBALS,
        ),
        feature(
            "network",
            "sk = os['sys'].modules['builtins'].__import__('socket')",
            f"sk.create_connection(('127.0.0.1', {port}))",
            "return 1",
            prefix=OS_GLOBALS,
        ),
        feature("stdout flood", "os['sys'].stdout.write('x' * 10**7)", "return 1", prefix=OS_GLOBALS),
        feature("runs as", "return os['getuid']()", prefix=OS_GLOBALS),
    ]
    try:
        accepted, rejected = score_proposed_features(
            [*BENIGN, *escapes], PROMPTS, limits=LIMITS, _unchecked=True
        )
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()
    check_benign(accepted)
    stopped = {r.label: r.reason for r in rejected}
    assert stopped.keys() == {e.label for e in escapes} - {"runs as"}
    assert "wall-clock limit" in stopped["infinite loop"]
    assert "MemoryError" in stopped["memory bomb"]
    assert "Too many open files" in stopped["file write"]  # RLIMIT_NOFILE: no new descriptor at all
    assert "Too many open files" in stopped["low-level file write"]
    assert "BlockingIOError" in stopped["fork"]  # RLIMIT_NPROC = 0 as a non-root user
    assert "Error" in stopped["subprocess"] and "Error" in stopped["network"]  # imports cannot open files
    assert "bytes of output" in stopped["stdout flood"]
    [runs_as] = [f for f in accepted if f.name == "runs_as"]
    assert (runs_as.compute(PROMPTS) != 0).all()  # never root, so RLIMIT_NPROC binds
    assert not marker.exists()
    check_parent_unharmed()


def test_cpu_limit_kills_a_busy_worker_before_the_wall_limit():
    busy = feature("busy", "while True:", "    pass")
    accepted, [rejection] = score_proposed_features(
        [BENIGN[0], busy], PROMPTS, limits=SandboxLimits(wall_seconds=60.0, cpu_seconds=1)
    )
    # killed by the CPU limit (SIGXCPU), not by the far later wall-clock limit: no timing needed
    assert rejection.reason.startswith("exceeded the CPU limit of 1 s (killed by SIGXCPU")
    assert "wall-clock" not in rejection.reason
    assert [f.name for f in accepted] == ["prompt_length"]
    assert live_workers() == []
