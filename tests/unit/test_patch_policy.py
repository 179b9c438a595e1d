"""The patch policy (docs/patches.md), enforced: every patch is in workflows/compat.py's table, the SDK's patch
API is called nowhere else, and each call site uses the function its patch's state allows."""

from __future__ import annotations

import re
from pathlib import Path

from workflows.compat import PATCHES, State

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = [p for d in ("workflows", "activities", "subjects", "durable_chaos") for p in (ROOT / d).rglob("*.py")]


def _calls(pattern: str) -> dict[Path, list[str]]:
    found = {p: re.findall(pattern, p.read_text()) for p in PRODUCT}
    return {p.relative_to(ROOT): ids for p, ids in found.items() if ids}


def test_the_sdk_patch_api_is_called_only_in_the_compatibility_module():
    direct = _calls(r"(?<!compat\.)\b(?:workflow\.)?(?:patched|deprecate_patch)\(")
    assert set(direct) <= {Path("workflows/compat.py")}, direct


def test_every_patch_call_names_a_patch_in_the_table_in_the_state_it_has():
    for fn, state in (("patched", State.ACTIVE), ("deprecated", State.DEPRECATED)):
        for path, ids in _calls(rf"compat\.{fn}\(\"([a-z0-9-]+)\"\)").items():
            for patch_id in ids:
                assert patch_id in PATCHES, f"{path}: {patch_id} is not in the table"
                assert PATCHES[patch_id].state == state, f"{path}: {patch_id} is {PATCHES[patch_id].state}"


def test_every_patch_in_the_table_is_still_called():
    # A patch whose call is gone (removed) must leave the table with it, or the table lies about the code.
    called = {i for ids in _calls(r"compat\.(?:patched|deprecated)\(\"([a-z0-9-]+)\"\)").values() for i in ids}
    assert called == set(PATCHES)
