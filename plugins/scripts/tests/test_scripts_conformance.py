"""The `scripts` plugin passes the conformance suite on a file-based service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nixos_migrate.fingerprint import tree_digest
from nixos_migrate.testing.cli import run_cli
from nixos_migrate.testing.conformance import Instance, PluginConformance
from nixos_migrate.testing.manifests import ManifestBuilder

V1, V2, V3 = "2024-01-01", "2024-02-01", "2024-03-01"


def migrations(data: Path) -> list[dict[str, Any]]:
    return [
        {"version": V1, "up": {"script": f'mkdir -p "{data}/t"\necho "1,Zoë" > "{data}/t/rows"'}},
        {
            "version": V2,
            "up": {"script": f'echo "2,Łukasz" >> "{data}/t/rows"\necho v2 > "{data}/schema"'},
            "down": {"script": f'sed -i "/Łukasz/d" "{data}/t/rows"\nrm "{data}/schema"'},
        },
        {
            # backed up by its own scripts, not by copying `paths`
            "version": V3,
            "up": {
                "script": f'gzip "{data}/t/rows"',
                "backup": f'cp -a "{data}/." "$BACKUP/"',
                "restore": f'find "{data}" -mindepth 1 -delete\ncp -a "$BACKUP/." "{data}/"',
            },
        },
    ]


class TestScriptsConformance(PluginConformance):
    plugin = "scripts"
    hops = [(V1, V2), (V2, V3), (V1, V3)]

    def create(self, root: Path, version: str | None) -> Instance:
        data = root / "data"
        data.mkdir()
        (data / "seed.bin").write_bytes(bytes(range(256)) * 64)
        instance = Instance(
            settings={"paths": [str(data)], "verify": f'test -d "{data}"'},
            spec={"migrations": migrations(data)},
            data={"dir": data},
        )
        if version is not None:
            builder = ManifestBuilder(root)
            builder.service("svc", plugin="scripts", target=version, settings=instance.settings, **instance.spec)
            result = run_cli(builder.write(), "up")
            assert result.code == 0, result.output
        return instance

    def fingerprint(self, instance: Instance) -> str:
        return tree_digest(instance.data["dir"])
