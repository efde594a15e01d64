"""Every exception the package raises derives from the tree in ``chargeward.errors``.

The source is read as an AST (nothing is imported): a ``raise`` of a builtin exception class,
or a class deriving straight from a builtin exception, fails unless the allow-list below
names it (by function or class, so it survives a module moving) and says why.  Every
``ChargewardError`` subclass defined anywhere in the package is listed in the tree that the
``chargeward.errors`` docstring draws.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from pathlib import Path

import chargeward
from chargeward import errors

SRC = Path(chargeward.__file__).parent
BUILTIN_EXCEPTIONS = frozenset(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)

# (qualified name of the function that raises, builtin exception): why it may stay a builtin.
ALLOWED_RAISES: dict[tuple[str, str], str] = {
    # The mapping protocol: get_many() (and any caller) catches KeyError for an absent node.
    ("MemoryTree.get", "KeyError"): "node-store lookup protocol",
    # The attribute protocol: getattr(station, name, default) and hasattr need AttributeError.
    ("RemoteStation.__getattr__", "AttributeError"): "__getattr__ protocol",
    ("encode_call", "AttributeError"): "the same refusal as RemoteStation.__getattr__",
    # Refuses an inherited securesystemslib API that cannot work here (abstract-method idiom).
    ("TufSigner.from_priv_key_uri", "NotImplementedError"): "refused inherited API",
    # Never leaves its module: RebuildResult.from_json turns it into a ConfigError.
    ("_typed", "TypeError"): "caught in from_json, re-raised as ConfigError",
    # Alembic shows a migration's exception as it is; a downgrade that would drop queued
    # audit entries stops the operator's `alembic downgrade`, it is not the package's API.
    ("downgrade", "RuntimeError"): "migration 0020 refuses to drop queued audit entries",
}

# Classes deriving straight from a builtin exception: why each is not under ChargewardError.
ALLOWED_CLASSES: dict[str, str] = {
    "ChargewardError": "the root of the tree",
    # Dashboard control flow: raised by a form handler and turned into a page or a redirect
    # by the dashboard's own handlers; never an API error.
    "Refused": "dashboard control flow (a page)",
    "NeedLogin": "dashboard control flow (a redirect to the sign-in page)",
    "NeedEnrolment": "dashboard control flow (a redirect to second-factor enrolment)",
    "BadForm": "dashboard control flow (the form again, with the message)",
    # A BaseException on purpose: no `except Exception` in the code under test may swallow
    # the simulated loss of power.
    "PowerCut": "simulated power loss (BaseException)",
}


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _raised_builtins(tree: ast.Module) -> Iterator[tuple[str, str, int]]:
    """(qualified name of the enclosing function, builtin raised, line) in ``tree``."""

    def walk(node: ast.AST, scope: tuple[str, ...]) -> Iterator[tuple[str, str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(child, (*scope, child.name))
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if isinstance(exc, ast.Name) and exc.id in BUILTIN_EXCEPTIONS:
                    yield ".".join(scope), exc.id, child.lineno
            yield from walk(child, scope)

    return walk(tree, ())


def builtin_raises() -> list[tuple[str, str, str]]:
    """(path:line, qualified function, builtin) of every raise of a builtin exception."""
    return [
        (f"{path.relative_to(SRC)}:{line}", where, name)
        for path, tree in _modules()
        for where, name, line in _raised_builtins(tree)
    ]


def _classes() -> dict[str, list[str]]:
    """Every class defined in the package, by name, with the names of its bases."""
    found: dict[str, list[str]] = {}
    for _, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                found.setdefault(node.name, []).extend(bases)
    return found


def test_only_allow_listed_builtin_exceptions_are_raised() -> None:
    found = builtin_raises()
    assert [r for r in found if (r[1], r[2]) not in ALLOWED_RAISES] == []
    # A stale entry (its raise is gone or converted) is removed from the list too.
    assert sorted(set(ALLOWED_RAISES) - {(r[1], r[2]) for r in found}) == []


def test_only_allow_listed_classes_derive_from_builtin_exceptions() -> None:
    classes = _classes()
    direct = {
        name for name, bases in classes.items() if any(b in BUILTIN_EXCEPTIONS for b in bases)
    }
    # Deriving from the tree *and* a builtin (InvalidValue(ChargewardError, ValueError)) is fine.
    tree = _tree_classes(classes)
    assert sorted(direct - tree - set(ALLOWED_CLASSES)) == []
    assert sorted(set(ALLOWED_CLASSES) - direct) == []


def _tree_classes(classes: dict[str, list[str]]) -> set[str]:
    tree = {"ChargewardError"}
    grew = True
    while grew:
        more = {n for n, bases in classes.items() if n not in tree and tree.intersection(bases)}
        tree |= more
        grew = bool(more)
    return tree


def test_the_errors_docstring_lists_every_class_of_the_tree() -> None:
    doc = errors.__doc__ or ""
    listed = {line.split("+-- ")[1].split()[0] for line in doc.splitlines() if "+-- " in line}
    public = {n for n in _tree_classes(_classes()) if not n.startswith("_")}  # _x stay inside
    assert sorted(public - {"ChargewardError"} - listed) == []


def test_a_new_builtin_raise_is_caught() -> None:
    """The walk sees a bare ValueError in a method, with or without a call."""
    tree = ast.parse(
        "class Parser:\n"
        "    def read(self, x):\n"
        "        if not x:\n"
        "            raise ValueError('empty')\n"
        "        raise RuntimeError\n"
        "def ok():\n"
        "    raise InvalidValue('fine')\n"
    )
    assert list(_raised_builtins(tree)) == [
        ("Parser.read", "ValueError", 4),
        ("Parser.read", "RuntimeError", 5),
    ]


def test_converted_errors_keep_their_builtin_base() -> None:
    """Callers that catch ValueError / TypeError, and pydantic validators, keep working."""
    assert issubclass(errors.InvalidValue, ValueError)
    assert issubclass(errors.InvalidValue, errors.ChargewardError)
    assert issubclass(errors.MisuseError, TypeError)
    assert issubclass(errors.MisuseError, errors.ChargewardError)


def test_bad_input_answers_400_and_a_bug_500_with_the_one_error_shape() -> None:
    """Chargeward server: an InvalidValue that reaches a route is a 400 ``bad_request`` (a
    bare ValueError was a 500); a MisuseError stays a logged 500 ``internal_error``."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from chargeward.server.http import problems

    app = FastAPI()
    problems.install(app)

    @app.get("/value")
    def value() -> None:
        raise errors.InvalidValue("security profile must be 1, 2 or 3")

    @app.get("/bug")
    def bug() -> None:
        raise errors.MisuseError("VerifiedImage is only made by accept_image()")

    client = TestClient(app, raise_server_exceptions=False)
    answer = client.get("/value")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "bad_request"
    assert answer.json()["error"]["message"] == "security profile must be 1, 2 or 3"
    answer = client.get("/bug")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error"
    assert "accept_image" not in answer.text


def test_the_cli_exit_code_of_bad_input_is_6() -> None:
    from chargeward.cli.main import exit_code_for

    assert exit_code_for(errors.InvalidValue("x")) == 6
    assert exit_code_for(errors.MisuseError("x")) == 1
