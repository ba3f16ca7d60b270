"""Child-process side of the feature sandbox: run ONE proposed feature function on many rows.

This file is executed as a script by :mod:`mecharule.features.sandbox_process` with
``python -I -S sandbox_worker.py SPEC_JSON`` (isolated mode, no site-packages), in a session and
process group of its own, so it imports only the standard library and never imports mecharule.
The rows arrive as JSON on stdin (``[[prompt, info], ...]``); one JSON object goes to stdout:
``{"ok": true, "values": [float | null, ...], "n_errors": k, "error": "first error",
"n_non_numeric": k, "non_numeric_types": [...], "n_non_finite": k, "uid": ...,
"protections": {name: bool}, "unenforced": [limits that could not be applied]}`` or
``{"ok": false, "error": "...", ...}``.

Before the untrusted code is even compiled, the worker confines itself:

* if it runs as root it drops to ``nobody`` (root ignores RLIMIT_NPROC and may signal anyone);
* RLIMIT_NPROC = 0 (no fork, no threads), RLIMIT_NOFILE = 3 (stdin/stdout/stderr only, so no
  file, socket or pipe can be opened), RLIMIT_FSIZE = 0, RLIMIT_CORE = 0;
* RLIMIT_CPU = ``cpu_seconds`` and RLIMIT_AS = current size + ``memory_mb``;
* a low recursion limit;
* on Linux, through ``ctypes`` on libc: ``PR_SET_DUMPABLE 0`` (nobody of the same uid can ptrace
  it or read its memory), ``PR_SET_NO_NEW_PRIVS 1`` and a seccomp filter (:data:`SECCOMP_TABLE`)
  under which ``kill``, ``tkill``, ``tgkill``, the ``sigqueue`` and ``pidfd`` calls, ``ptrace``,
  ``process_vm_readv/writev`` and ``socket`` fail with EPERM — so even code that got past the AST
  check and holds the real ``os`` module cannot signal, trace or poke another process (or open a
  socket after closing one of its three descriptors). The filter also denies every call of a
  foreign ABI (i386, x32). Each protection that could not be applied is reported, not fatal.

The code then runs with a small table of builtins and ``math``/``re`` namespaces that expose only
functions (no module objects, whose attributes would lead back to ``sys``). The parent has already
checked the source against an AST allow-list and enforces a wall-clock limit by killing the
process group; these limits are the second wall.

``spec["disable"]`` lists protections to leave off (``"drop_root"``, ``"seccomp"``). Only tests set
it, to show which protection stops an attack; the sandbox itself never does.
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
MAX_TYPE_NAMES = 5

SAFE_BUILTIN_NAMES = (
    "abs", "min", "max", "sum", "len", "all", "any", "round", "sorted", "set", "list", "tuple",
    "dict", "int", "float", "str", "bool", "range", "enumerate", "zip", "reversed", "isinstance",
    "Exception", "ValueError", "TypeError", "KeyError", "IndexError", "ZeroDivisionError",
)  # fmt: skip
RE_NAMES = (
    "compile", "search", "match", "fullmatch", "findall", "finditer", "sub", "subn", "split",
    "escape", "IGNORECASE", "I", "MULTILINE", "M", "DOTALL", "S", "VERBOSE", "X", "ASCII", "A",
)  # fmt: skip

# -- seccomp: one row per architecture (``os.uname().machine``) --------------------------------------
DENIED_SYSCALLS = (
    "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open",
    "pidfd_send_signal", "pidfd_getfd", "ptrace", "process_vm_readv", "process_vm_writev", "socket",
)  # fmt: skip
SECCOMP_TABLE: dict[str, tuple[int, dict[str, int]]] = {  # machine: (AUDIT_ARCH_*, syscall numbers)
    "x86_64": (0xC000003E, {
        "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
        "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "socket": 41,
    }),
    "aarch64": (0xC00000B7, {
        "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
        "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "socket": 198,
    }),
}  # fmt: skip
X32_SYSCALL_BIT = 0x40000000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, EPERM = 0x7FFF0000, 0x00050000, 1
PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, SECCOMP_MODE_FILTER = 4, 22, 38, 2


def safe_globals() -> dict[str, Any]:
    """The only names the feature code can see."""
    table = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}
    table["None"] = None
    math_ns = types.SimpleNamespace(**{k: v for k, v in vars(math).items() if not k.startswith("_")})
    re_ns = types.SimpleNamespace(**{name: getattr(re, name) for name in RE_NAMES})
    return {"__builtins__": table, "math": math_ns, "re": re_ns}


def confine(cpu_seconds: int, memory_mb: int, recursion_limit: int, drop_root: bool = True) -> list[str]:
    """Drop root, then apply the resource limits. Returns the limits that could not be applied."""
    vm_bytes = _current_vm_bytes()  # before the drop: /proc/self may turn unreadable after setuid
    unenforced = []
    if drop_root and os.geteuid() == 0:
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
    return unenforced


def _current_vm_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 64 * 1024 * 1024  # no /proc (macOS): assume a small interpreter


# -- process protections (Linux, through ctypes on libc) --------------------------------------------


def load_libc() -> Any:
    """libc through ctypes, or None (no ctypes, not Linux). Call it while files can still be opened."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        libc.prctl.restype = ctypes.c_int
        return libc
    except (ImportError, OSError, AttributeError):
        return None


def seccomp_program(machine: str) -> list[tuple[int, int, int, int]] | None:
    """The BPF filter (code, jt, jf, k) that denies :data:`DENIED_SYSCALLS`; None for an unknown machine."""
    if machine not in SECCOMP_TABLE:
        return None
    arch, numbers = SECCOMP_TABLE[machine]
    denied = [numbers[name] for name in DENIED_SYSCALLS]
    n = len(denied)
    deny = (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM)
    program = [
        (BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (BPF_JEQ_K, 1, 0, arch),
        deny,  # a foreign ABI (i386 through int 0x80, ...): nothing is allowed
        (BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (BPF_JGE_K, n + 1, 0, X32_SYSCALL_BIT),  # x32 calls jump to the final deny
    ]
    program += [(BPF_JEQ_K, n - i, 0, number) for i, number in enumerate(denied)]
    return [*program, (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW), deny]


def install_seccomp(libc: Any, program: list[tuple[int, int, int, int]]) -> bool:
    """Install ``program`` for this process (needs no-new-privs or CAP_SYS_ADMIN); True on success."""
    import ctypes

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                    ("k", ctypes.c_uint32)]  # fmt: skip

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    filters = (SockFilter * len(program))(*(SockFilter(*row) for row in program))
    fprog = SockFprog(len(program), filters)
    address = ctypes.cast(ctypes.pointer(fprog), ctypes.c_void_p).value or 0
    return libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, address, 0, 0) == 0


def protect(libc: Any, disable: list[str]) -> dict[str, bool]:
    """Apply the process protections; report which hold (see the module docstring)."""
    applied = {
        "own_session": os.getsid(0) == os.getpid(),
        "non_root": os.geteuid() != 0,
        "not_dumpable": False,
        "no_new_privs": False,
        "seccomp": False,
    }
    if libc is None:
        return applied
    try:
        applied["not_dumpable"] = libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
        applied["no_new_privs"] = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
        program = seccomp_program(os.uname().machine)
        if "seccomp" not in disable and program is not None and applied["no_new_privs"]:
            applied["seccomp"] = install_seccomp(libc, program)
    except (OSError, AttributeError, TypeError, ValueError):
        pass  # whatever did not hold is reported as False
    return applied


# -- running the rows --------------------------------------------------------------------------------


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
    """``"Type: message"``, cut to ERROR_CHARS; never raises, even when the message cannot be made
    (``str(ValueError(10**5000))`` itself raises ValueError: ints that long have no decimal form)."""
    name = type(exc).__name__
    try:
        detail = str(exc)[:ERROR_CHARS]
    except Exception as inner:  # the message is untrusted code too
        detail = f"<message not printable: {type(inner).__name__}>"
    text = f"{name}: {detail}" if detail else name
    return text[:ERROR_CHARS]


class RowTally:
    """Per-row outcomes: values, errors (with the first message), non-numbers, non-finite numbers."""

    def __init__(self) -> None:
        self.values: list[float | None] = []
        self.n_errors = 0
        self.first_error = ""
        self.n_non_numeric = 0
        self.non_numeric_types: list[str] = []
        self.n_non_finite = 0

    def error(self, exc: BaseException) -> None:
        self.n_errors += 1
        self.first_error = self.first_error or describe(exc)
        self.values.append(None)

    def result(self, value: object) -> None:
        number = to_number(value)
        if number is None and isinstance(value, float):
            self.n_non_finite += 1
        elif number is None and value is not None:
            self.n_non_numeric += 1
            name = type(value).__name__
            if name not in self.non_numeric_types and len(self.non_numeric_types) < MAX_TYPE_NAMES:
                self.non_numeric_types.append(name)
        self.values.append(number)

    def message(self) -> dict[str, Any]:
        return {"ok": True, "values": self.values, "n_errors": self.n_errors, "error": self.first_error,
                "n_non_numeric": self.n_non_numeric, "non_numeric_types": self.non_numeric_types,
                "n_non_finite": self.n_non_finite}  # fmt: skip


def run_rows(function: Any, rows: list[Any]) -> RowTally:
    """Call ``function`` on every row; an exception costs that row only (its value is None)."""
    tally = RowTally()
    for prompt, info in rows:
        try:
            result = function(prompt, info)
            tally.result(result)
            del result
        except Exception as exc:  # one bad row must not lose the others
            tally.error(exc)
    return tally


def main() -> None:
    spec = json.loads(sys.argv[1])
    rows = json.loads(sys.stdin.buffer.read())
    disable = [str(name) for name in spec.get("disable", [])]
    libc = load_libc()
    unenforced = confine(int(spec["cpu_seconds"]), int(spec["memory_mb"]), int(spec["recursion_limit"]),
                         drop_root="drop_root" not in disable)  # fmt: skip
    protections = protect(libc, disable)
    report = {"uid": os.getuid(), "protections": protections, "unenforced": unenforced}
    namespace = safe_globals()
    try:
        code = compile(spec["source"], "<proposed feature>", "exec")
        exec(code, namespace)  # noqa: S102  (untrusted code, only ever inside this confined process)
        function = namespace[spec["function"]]
        if not callable(function):
            raise TypeError(f"{spec['function']} is not a function")
    except Exception as exc:
        _emit({"ok": False, "error": "definition failed: " + describe(exc), **report})
        return
    _emit({**run_rows(function, rows).message(), **report})


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, allow_nan=False))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
