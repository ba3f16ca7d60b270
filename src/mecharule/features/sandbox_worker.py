"""Child-process side of the feature sandbox: run ONE proposed feature function on many rows.

This file is executed as a script by :mod:`mecharule.features.sandbox` with
``python -I -S sandbox_worker.py SPEC_JSON`` (isolated mode, no site-packages), so it imports only
the standard library and never imports mecharule. The rows arrive as JSON on stdin
(``[[prompt, info], ...]``); one JSON object goes to stdout:
``{"ok": true, "values": [float | null, ...], "n_errors": k, "error": "first error", "uid": ...,
"unenforced": [limits that could not be applied]}`` or ``{"ok": false, "error": "...", ...}``.

Before the untrusted code is even compiled, the worker confines itself:

* if it runs as root it drops to ``nobody`` (root ignores RLIMIT_NPROC);
* RLIMIT_NPROC = 0 (no fork, no threads), RLIMIT_NOFILE = 3 (stdin/stdout/stderr only, so no
  file, socket or pipe can be opened), RLIMIT_FSIZE = 0, RLIMIT_CORE = 0;
* RLIMIT_CPU = ``cpu_seconds`` and RLIMIT_AS = current size + ``memory_mb``;
* a low recursion limit.

The code then runs with a small table of builtins and ``math``/``re`` namespaces that expose only
functions (no module objects, whose attributes would lead back to ``sys``). The parent has already
checked the source against an AST allow-list and enforces a wall-clock limit by killing the
process group; these limits are the second wall.
"""

import builtins
import json
import math
import os
import re
import resource
import sys
import types
from typing import Any

NOBODY = 65534
CLIP = 1e12
ERROR_CHARS = 200

SAFE_BUILTIN_NAMES = (
    "abs", "min", "max", "sum", "len", "all", "any", "round", "sorted", "set", "list", "tuple",
    "dict", "int", "float", "str", "bool", "range", "enumerate", "zip", "reversed", "isinstance",
    "Exception", "ValueError", "TypeError", "KeyError", "IndexError", "ZeroDivisionError",
)  # fmt: skip
RE_NAMES = (
    "compile", "search", "match", "fullmatch", "findall", "finditer", "sub", "subn", "split",
    "escape", "IGNORECASE", "I", "MULTILINE", "M", "DOTALL", "S", "VERBOSE", "X", "ASCII", "A",
)  # fmt: skip


def safe_globals() -> dict[str, Any]:
    """The only names the feature code can see."""
    table = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}
    table["None"] = None
    math_ns = types.SimpleNamespace(**{k: v for k, v in vars(math).items() if not k.startswith("_")})
    re_ns = types.SimpleNamespace(**{name: getattr(re, name) for name in RE_NAMES})
    return {"__builtins__": table, "math": math_ns, "re": re_ns}


def confine(cpu_seconds: int, memory_mb: int, recursion_limit: int) -> tuple[int, list[str]]:
    """Drop root, then apply the resource limits. Returns (uid the code runs as, limits not applied)."""
    vm_bytes = _current_vm_bytes()  # before the drop: /proc/self may turn unreadable after setuid
    unenforced = []
    if os.geteuid() == 0:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        except OSError:
            unenforced.append("drop root (RLIMIT_NPROC does not bind root)")
    limits = [
        ("RLIMIT_CORE", 0),
        ("RLIMIT_FSIZE", 0),
        ("RLIMIT_NPROC", 0),
        ("RLIMIT_CPU", cpu_seconds),
        ("RLIMIT_AS", vm_bytes + memory_mb * 1024 * 1024),
        ("RLIMIT_NOFILE", 3),
    ]
    for name, soft in limits:
        which = getattr(resource, name)
        hard = soft + 1 if name == "RLIMIT_CPU" else soft  # SIGXCPU first, then SIGKILL
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            try:
                resource.setrlimit(which, (soft, soft))
            except (ValueError, OSError):
                unenforced.append(name)
    sys.setrecursionlimit(recursion_limit)
    return os.getuid(), unenforced


def _current_vm_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 64 * 1024 * 1024  # no /proc (macOS): assume a small interpreter


def to_number(value: object) -> float | None:
    """bool → 0/1; int/float → float, non-finite → None, clipped to ±1e12; anything else → None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int):
        if value > CLIP:
            return CLIP
        return -CLIP if value < -CLIP else float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return max(-CLIP, min(CLIP, value))
    return None


def describe(exc: BaseException) -> str:
    detail = str(exc)
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return text[:ERROR_CHARS]


def run_rows(function: Any, rows: list[Any]) -> tuple[list[float | None], int, int, str]:
    values: list[float | None] = []
    n_errors, n_non_numeric, first_error = 0, 0, ""
    for prompt, info in rows:
        try:
            result = function(prompt, info)
        except Exception as exc:  # one bad row must not lose the others
            n_errors += 1
            first_error = first_error or describe(exc)
            values.append(None)
            continue
        number = to_number(result)
        if number is None and result is not None and not isinstance(result, float):
            n_non_numeric += 1
            first_error = first_error or f"returned a non-number of type {type(result).__name__}"
        values.append(number)
        del result
    return values, n_errors, n_non_numeric, first_error


def main() -> None:
    spec = json.loads(sys.argv[1])
    rows = json.loads(sys.stdin.buffer.read())
    uid, unenforced = confine(int(spec["cpu_seconds"]), int(spec["memory_mb"]), int(spec["recursion_limit"]))
    namespace = safe_globals()
    try:
        code = compile(spec["source"], "<proposed feature>", "exec")
        exec(code, namespace)  # noqa: S102  (untrusted code, only ever inside this confined process)
        function = namespace[spec["function"]]
        if not callable(function):
            raise TypeError(f"{spec['function']} is not a function")
    except Exception as exc:
        error = "definition failed: " + describe(exc)
        _emit({"ok": False, "error": error, "uid": uid, "unenforced": unenforced})
        return
    values, n_errors, n_non_numeric, first_error = run_rows(function, rows)
    _emit({"ok": True, "values": values, "n_errors": n_errors, "n_non_numeric": n_non_numeric,
           "error": first_error, "uid": uid, "unenforced": unenforced})  # fmt: skip


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, allow_nan=False))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
