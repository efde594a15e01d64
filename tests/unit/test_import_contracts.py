"""Import contracts: the server's sub-packages are layered, and the flow's packages stay off it.

Layers of ``chargeward.server``, lowest first (docs/adr/0029-server-sub-packages.md): a module
may import its own layer and the layers below it, never one above.  Imports under
``if TYPE_CHECKING:`` are not followed (they do not run); imports inside functions are.

Outside the server, nothing under the packages in ``SERVER_FREE`` imports ``chargeward.server``:
the audit log owns its tables (``chargeward.audit.tables``, on ``chargeward.storage``'s base) and
the station-password policy both sides use is ``chargeward.crypto.station_passwords``.  Only the
CLI, the simulator and the demo, which run servers, import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

SERVER_LAYERS = (
    "common",  # views (schemas), input checks, signed URLs, metrics: no server imports
    "store",  # tables, database, migrations, append queue, blobs
    "auth",  # accounts, tokens, roles, tenancy, passwords, throttles
    "fleet",  # station registry, sites/models/tags, alerts
    "rollout",  # releases, repository, supply chain, campaigns, updates, deltas, link budget
    "proxy",  # proxy mode: the relay to an upstream CSMS, its policies and queue
    "stations",  # OCPP listener, station reports, certificates, security profiles, import
    "cluster",  # nodes, leader election
    "state",  # chargeward.server.state: the services one server process holds
    "http",  # REST routers, dashboard, error shape, limits, authorisation dependencies
    "runtime",  # chargeward.server.runtime: builds and runs it all
)

SERVER_FREE = (
    "agent",
    "audit",
    "campaign",
    "crypto",
    "evidence",
    "factory",
    "model",
    "ocpp",
    "publish",
    "release",
    "storage",
    "supply",
    "trust",
    # modules at the top of the package every side uses
    "errors",
    "fileio",
    "limits",
    "logging_setup",
    "procinfo",
    "progress",
    "strictjson",
)


def module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(src: Path) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted(src.rglob("*.py"))}


def _type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def imports(path: Path, name: str, known: set[str]) -> list[tuple[str, int]]:
    """The ``chargeward`` modules ``path`` imports at run time, with line numbers."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against the package
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:  # `from pkg import module` names the module
                    sub = f"{base}.{alias.name}"
                    found.append((sub if sub in known else base, child.lineno))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return [(m, line) for m, line in found if m == "chargeward" or m.startswith("chargeward.")]


def server_layer(module: str) -> int | None:
    """The layer index of a ``chargeward.server`` module (None: the bare package)."""
    parts = module.split(".")
    if parts[:2] != ["chargeward", "server"] or len(parts) < 3:
        return None
    return SERVER_LAYERS.index(parts[2])


def layer_violations(src: Path) -> list[str]:
    mods = modules(src)
    out = []
    for name, path in mods.items():
        mine = server_layer(name)
        if mine is None:
            continue
        for target, line in imports(path, name, set(mods)):
            theirs = server_layer(target)
            if theirs is not None and theirs > mine:
                out.append(
                    f"{path.relative_to(src)}:{line}: {name} ({SERVER_LAYERS[mine]}) imports "
                    f"{target} ({SERVER_LAYERS[theirs]}), a layer above"
                )
    return out


def server_imports(src: Path) -> set[tuple[str, str]]:
    mods = modules(src)
    found = set()
    for name, path in mods.items():
        if name.split(".")[1:2] and name.split(".")[1] in SERVER_FREE:
            for target, _ in imports(path, name, set(mods)):
                if target == "chargeward.server" or target.startswith("chargeward.server."):
                    found.add((name, target))
    return found


def test_every_server_module_is_in_a_layer() -> None:
    for name in modules(SRC):
        if name.startswith("chargeward.server."):
            layer = name.split(".")[2]
            assert layer in SERVER_LAYERS, f"{name}: not in a layer of {SERVER_LAYERS}"


def test_server_sub_packages_import_only_downwards() -> None:
    violations = layer_violations(SRC)
    assert not violations, "\n".join(violations)


def test_the_flow_packages_do_not_import_the_server() -> None:
    found = sorted(server_imports(SRC))
    assert not found, "\n".join(f"{n} imports {t}" for n, t in found)


@pytest.mark.parametrize(
    ("path", "line", "forbidden"),
    [
        ("chargeward/server/store/blobs.py", "from chargeward.server.http import problems\n", True),
        ("chargeward/server/store/blobs.py", "import chargeward.server.runtime\n", True),
        ("chargeward/server/http/api.py", "from chargeward.server.store import blobs\n", False),
        (
            "chargeward/server/rollout/updates.py",
            "if TYPE_CHECKING:\n    from chargeward.server.state import ServerState\n",
            False,
        ),
        ("chargeward/server/rollout/updates.py", "def f():\n    from ..state import x\n", True),
    ],
)
def test_the_layer_check_sees_a_forbidden_import(
    tmp_path: Path, path: str, line: str, forbidden: bool
) -> None:
    """The check on a copy of the tree with one import added: found iff it points upwards."""
    for rel in ("common", "store", "http", "rollout", "state.py", "runtime.py"):
        src = SRC / "chargeward" / "server" / rel
        dst = tmp_path / "chargeward" / "server" / rel
        if src.is_dir():
            dst.mkdir(parents=True)
            for p in src.glob("*.py"):
                (dst / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
        else:
            dst.write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "chargeward" / "__init__.py").write_text("")
    (tmp_path / "chargeward" / "server" / "__init__.py").write_text("")
    assert layer_violations(tmp_path) == []
    target = tmp_path / path
    target.write_text(target.read_text(encoding="utf-8") + line, encoding="utf-8")
    assert bool(layer_violations(tmp_path)) is forbidden


def test_the_flow_check_sees_a_new_server_import(tmp_path: Path) -> None:
    crypto = tmp_path / "chargeward" / "crypto"
    crypto.mkdir(parents=True)
    (tmp_path / "chargeward" / "__init__.py").write_text("")
    (crypto / "__init__.py").write_text("")
    (crypto / "keys.py").write_text("from chargeward.server.auth import passwords\n")
    assert server_imports(tmp_path) == {("chargeward.crypto.keys", "chargeward.server.auth")}
