# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Dumps going down to older majors: the streaming sed program and the in-process rewrite of the
globals apply the same rules, and neither touches the rows of COPY blocks."""

from __future__ import annotations

import subprocess

import pytest

from nixos_migrate_postgresql.logical import _adapt, _sed_program

DUMP = (
    "SET default_table_access_method = heap;\n"
    "SET default_toast_compression = 'pglz';\n"
    "SET transaction_timeout = 0;\n"
    "CREATE DATABASE legacy WITH TEMPLATE = template0 ENCODING = 'LATIN1' LOCALE_PROVIDER = libc LOCALE = 'C';\n"
    "COPY t (a) FROM stdin;\n"
    "a.b*c [x] ^$ & / \\\\\n"
    "SET transaction_timeout = 0;\n"
    "x LOCALE_PROVIDER = libc y\n"
    "\\.\n"
    "SET transaction_timeout = 0;\n"
)


ROWS = "a.b*c [x] ^$ & / \\\\\nSET transaction_timeout = 0;\nx LOCALE_PROVIDER = libc y\n"


@pytest.mark.parametrize("target", [11, 13, 14, 16, 18])
def test_sed_and_python_rewrite_dumps_alike(target):
    program = _sed_program(target)
    sed = subprocess.run(["sed", *program], input=DUMP, capture_output=True, text=True, check=True) if program else None
    by_sed = sed.stdout if sed else DUMP  # the pipeline leaves sed out
    by_python = "".join(_adapt(DUMP.splitlines(True), target, "postgres"))
    assert by_sed == by_python
    assert (program == []) == (target >= 17)  # nothing to rewrite: no sed in the pipeline
    outside = by_sed.replace(ROWS, "")
    assert ("transaction_timeout" in outside) == (target >= 17)
    assert ("LOCALE_PROVIDER" in outside) == (target >= 15)
    assert ROWS in by_sed  # data rows pass untouched, even those that look like settings
