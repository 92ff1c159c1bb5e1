# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Dumps going down to older majors: the streaming sed program and the in-process rewrite of the
globals apply the same rules."""

from __future__ import annotations

import subprocess

import pytest

from nixos_migrate_postgresql.logical import _adapt_line, _sed_program

DUMP = (
    "SET default_table_access_method = heap;\n"
    "SET default_toast_compression = 'pglz';\n"
    "SET transaction_timeout = 0;\n"
    "CREATE DATABASE legacy WITH TEMPLATE = template0 ENCODING = 'LATIN1' LOCALE_PROVIDER = libc LOCALE = 'C';\n"
    "COPY t (a) FROM stdin;\n"
    "a.b*c [x] ^$ & / \\\\\n"
    "\\.\n"
)


@pytest.mark.parametrize("target", [11, 13, 14, 16, 18])
def test_sed_and_python_rewrite_dumps_alike(target):
    by_sed = subprocess.run(
        ["sed", *_sed_program(target)], input=DUMP, capture_output=True, text=True, check=True
    ).stdout
    by_python = "".join(line for line in (_adapt_line(x, target, "postgres") for x in DUMP.splitlines(True)) if line)
    assert by_sed == by_python
    assert ("transaction_timeout" in by_sed) == (target >= 17)
    assert ("LOCALE_PROVIDER" in by_sed) == (target >= 15)
    assert "a.b*c [x] ^$ & / \\\\\n" in by_sed  # data rows pass untouched
