"""Each layer imports only from below it, so a reader (and a new module) knows where a helper may live.

Bottom to top: wire models and shared bits (contracts, ids, state, images, quorum), wording, then the fault catalog,
the safety checkers and the subjects, then activities and experiment files, then workflows, then the runtime and the command line.
Imports made only for type checking do not count: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RANK = {
    "durable_chaos.contracts": 0, "durable_chaos.ids": 0, "durable_chaos.state": 0, "durable_chaos.images": 0,
    "durable_chaos.quorum": 0, "durable_chaos.wording": 1, "durable_chaos.hypothesis": 1, "durable_chaos.slow": 1,
    "durable_chaos.experiment": 3,
    "durable_chaos.campaign": 3,
    "durable_chaos.faults": 2, "durable_chaos.safety": 2, "subjects": 2,
    "activities": 3, "workflows": 4, "durable_chaos.runtime": 5, "durable_chaos.cli": 6,
}


def _layer(module: str) -> str | None:
    owners = [k for k in RANK if module == k or module.startswith(k + ".")]
    return max(owners, key=len) if owners else None


def _runtime_imports(tree: ast.Module) -> list[str]:
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    return [n.module for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and id(n) not in typing_only]


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for top in ("workflows", "activities", "subjects", "durable_chaos"):
        for path in (ROOT / top).rglob("*.py"):
            me = _layer(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"))
            if me is None:
                continue
            for module in _runtime_imports(ast.parse(path.read_text())):
                other = _layer(module)
                if other and RANK[other] > RANK[me]:
                    upward.append(f"{path.relative_to(ROOT)} imports {module}")
    assert upward == []
