"""The order in which a replica set takes one step, member by member, given by `plan` as data
(`steps[].data.rolling`): the plugin performs standalone servers only, an operator (or an
orchestration) performs these."""

from __future__ import annotations

from nixos_migrate_mongodb import versions


def order(source: str, target: str, replica_set: str) -> list[str]:
    rs = f"replica set {replica_set!r}"
    if versions.key(target) > versions.key(source):
        confirm = ", confirm: true" if versions.needs_confirm(target) else ""
        return [
            f"check that every member of {rs} is healthy and has featureCompatibilityVersion {source}",
            f"on each secondary in turn: stop it, start mongod {target} on its data, wait until it is SECONDARY",
            "on the primary: rs.stepDown(), wait until another member is PRIMARY",
            f"stop the former primary, start mongod {target} on its data, wait until it is SECONDARY",
            f"on the primary: setFeatureCompatibilityVersion {target!r}{confirm}",
        ]
    if versions.binary_downgrade(source):
        return [
            f"on the primary of {rs}: setFeatureCompatibilityVersion {target!r}, wait until every member has it",
            f"on each secondary in turn: stop it, start mongod {target} on its data, wait until it is SECONDARY",
            "on the primary: rs.stepDown(), wait until another member is PRIMARY",
            f"stop the former primary, start mongod {target} on its data, wait until it is SECONDARY",
        ]
    return [
        f"stop every member of {rs}",
        f"restore on every member the backup taken before {target} -> {source}",
        f"start every member with mongod {target}; writes since the backup are lost",
    ]
