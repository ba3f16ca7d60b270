"""Wall 1: the AST allow-list rejects dangerous source before anything runs."""

from __future__ import annotations

import pytest

from mecharule.errors import SandboxError
from mecharule.features.sandbox import MAX_SOURCE_CHARS, validate_feature_source


def body(*lines: str) -> str:
    return "def my_feature(prompt: str, info: dict) -> float | None:\n" + "".join(f"    {x}\n" for x in lines)


REJECTED = {
    "import": ("import os\n" + body("return 1"), "Import"),
    "import inside": (body("import os", "return 1"), "Import"),
    "from import": (body("from os import system", "return 1"), "ImportFrom"),
    "dunder chain": (body("return ().__class__.__bases__[0].__subclasses__()"), "starts with '_'"),
    "dunder name": (body("return __import__('os')"), "'__import__'"),
    "builtins dunder": (body("return __builtins__"), "starts with '_'"),
    "private name": (body("_x = 1", "return _x"), "starts with '_'"),
    "open": (body("open('/tmp/x', 'w').write('x')", "return 1"), "'open'"),
    "eval": (body("return eval('1+1')"), "'eval'"),
    "exec": (body("exec('x=1')", "return 1"), "'exec'"),
    "compile": (body("return compile('1', 'f', 'eval')"), "'compile'"),
    "getattr": (body("return getattr(prompt, 'upper')()"), "'getattr'"),
    "type": (body("return type(prompt)"), "'type'"),
    "object": (body("return object"), "'object'"),
    "globals": (body("return len(globals())"), "'globals'"),
    "vars": (body("return vars()"), "'vars'"),
    "print": (body("print(prompt)", "return 1"), "'print'"),
    "os name": (body("return os.getpid()"), "'os'"),
    "generator frame": (body("g = (x for x in [1])", "return g.gi_frame"), "gi_frame"),
    "frame back": (body("return prompt.f_back"), "f_back"),
    "mro": (body("return str.mro()"), "mro"),
    "str.format": (body("return '{0.__class__}'.format(prompt)"), "format"),
    "class": ("class A:\n    pass\n" + body("return 1"), "exactly one top-level function"),
    "class inside": (body("class A:", "    pass", "return 1"), "ClassDef"),
    "with": (body("with x:", "    pass", "return 1"), "With"),
    "global": (body("global counter", "return 1"), "Global"),
    "nonlocal": (body("def inner(prompt, info):", "    nonlocal x", "return 1"), "Nonlocal"),
    "yield": (body("yield 1"), "Yield"),
    "async": ("async def my_feature(prompt, info):\n    return 1\n", "exactly one top-level function"),
    "await": (body("return await prompt"), "Await"),
    "delete": (body("del info['a']", "return 1"), "Delete"),
    "two functions": (body("return 1") + body("return 2"), "exactly one top-level function"),
    "top-level code": ("x = 1\n" + body("return 1"), "exactly one top-level function"),
    "wrong args": ("def my_feature(text, meta):\n    return 1\n", "must take exactly (prompt, info)"),
    "star args": ("def my_feature(prompt, info, *rest):\n    return 1\n", "must take exactly (prompt, info)"),
    "defaults": ("def my_feature(prompt, info={}):\n    return 1\n", "default argument"),
    "decorator": ("@cache\ndef my_feature(prompt, info):\n    return 1\n", "decorators"),
    "syntax error": ("def my_feature(prompt, info):\n    return (\n", "does not parse"),
    "empty": ("", "exactly one top-level function"),
    "too long": (body("return 1", "# " + "x" * MAX_SOURCE_CHARS), "characters"),
    "too many lines": (body(*(["x = 1"] * 80), "return x"), "lines"),
    "deep nesting": (body("return " + "(" * 300 + "1" + ")" * 300), "does not parse"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_dangerous_source_is_rejected_with_a_reason(case):
    source, reason = REJECTED[case]
    with pytest.raises(SandboxError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        validate_feature_source(source)


ACCEPTED = {
    "regex": body("return len(re.findall(r'[0-9]+', prompt))"),
    "math": body("n = int(info.get('a') or 0)", "return math.log10(n + 1)"),
    "comprehension": body(
        "words = prompt.split()", "return sum(1 for w in words if w.isupper()) / max(len(words), 1)"
    ),
    "try/except": body(
        "try:", "    return float(prompt.split('=')[0])", "except ValueError:", "    return None"
    ),
    "lambda and sorted": body(
        "xs = sorted(prompt.split(), key=lambda w: -len(w))", "return len(xs[0]) if xs else None"
    ),
    "underscore loop variable": body("n = 0", "for _ in range(3):", "    n += 1", "return n"),
    "f-string and dict": body("d = {'a': 1}", "key = f'{prompt[:1]}'", "return d.get(key, 0)"),
    "docstring and nested helper": 'def my_feature(prompt, info):\n    """Doc."""\n'
    "    def count(c):\n        return prompt.count(c)\n    return count('*')\n",
    "any name works": "def digits_ratio(prompt, info):\n"
    "    return sum(c.isdigit() for c in prompt) / (len(prompt) or 1)\n",
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_typical_feature_code_is_accepted(case):
    name = validate_feature_source(ACCEPTED[case])
    assert name == ("digits_ratio" if case == "any name works" else "my_feature")
