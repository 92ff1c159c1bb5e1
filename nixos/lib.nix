# The pure part of the NixOS module: option values -> the manifest, the systemd units and the
# pre-switch check. Builtins only (no nixpkgs), so that `nix-instantiate --eval` tests it on
# machines without nixpkgs; module.nix declares the options and passes their values here.
let
  inherit (builtins)
    attrNames
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    genList
    isAttrs
    isList
    isString
    length
    listToAttrs
    mapAttrs
    match
    stringLength
    substring
    throw
    toJSON
    ;

  optionPath = "services.nixos-migrate";
  fail = path: msg: throw "${optionPath}.${path}: ${msg}";

  filterAttrs =
    pred: attrs:
    listToAttrs (
      concatMap (n: if pred n attrs.${n} then [ { name = n; value = attrs.${n}; } ] else [ ]) (attrNames attrs)
    );
  # optional manifest keys are left out, never written as null
  compact = filterAttrs (_: v: v != null);
  imap0 = f: list: genList (i: f i (builtins.elemAt list i)) (length list);
  mod = a: b: a - (a / b) * b;

  digitValues = listToAttrs (
    genList (i: {
      name = toString i;
      value = i;
    }) 10
  );
  number = s: foldl' (n: i: n * 10 + digitValues.${substring i 1 s}) 0 (genList (i: i) (stringLength s));

  # why `v` is not a date written YYYY-MM-DD (the manifest's migration versions), or null
  dateProblem =
    v:
    let
      m = match "([0-9]{4})-([0-9]{2})-([0-9]{2})" v;
      year = number (builtins.elemAt m 0);
      month = number (builtins.elemAt m 1);
      day = number (builtins.elemAt m 2);
      leap = (mod year 4 == 0 && mod year 100 != 0) || mod year 400 == 0;
      days = builtins.elemAt [ 31 (if leap then 29 else 28) 31 30 31 30 31 31 30 31 30 31 ] (month - 1);
    in
    if !isString v then
      "must be a string like \"2024-05-01\""
    else if m == null then
      "\"${v}\" is not a date (YYYY-MM-DD)"
    else if year == 0 || month < 1 || month > 12 || day < 1 || day > days then
      "\"${v}\" is not a date (YYYY-MM-DD): no such day"
    else
      null;

  serviceName = "[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}";

  actionKeys = [
    "script"
    "warn"
    "backup"
    "restore"
  ];

  action =
    path: a:
    let
      unknown = filter (k: !elem k actionKeys) (attrNames a);
    in
    if !isAttrs a then
      fail path "must be an attribute set of ${concatStringsSep ", " actionKeys}"
    else if unknown != [ ] then
      fail "${path}.${builtins.head unknown}" "unknown key (expected one of ${concatStringsSep ", " actionKeys})"
    else
      compact (listToAttrs (map (k: { name = k; value = a.${k} or null; }) actionKeys));

  migration =
    name: i: m:
    let
      path = "services.${name}.migrations[${toString i}]";
      problem = dateProblem (m.version or null);
    in
    if !(m ? version) then
      fail "${path}.version" "missing (a date, YYYY-MM-DD)"
    else if problem != null then
      fail "${path}.version" problem
    else
      {
        inherit (m) version;
        up = action "${path}.up" (m.up or { });
        down = action "${path}.down" (m.down or { });
      };

  # a service's values over its plugin's defaults (`defaults.<plugin>`, which the plugin's NixOS
  # fragment takes from the nixpkgs service, or `defaults."<plugin>/<service>"` for plugins whose
  # nixpkgs service runs several instances): unit and user where the service sets none, settings
  # key by key. One path for every spelling of a service.
  withDefaults =
    defaults: name: svc:
    let
      plugin = if (svc.plugin or null) != null then svc.plugin else name;
      d = defaults."${plugin}/${name}" or defaults.${plugin} or { };
      given = k: (svc.${k} or null) != null;
    in
    svc
    // {
      unit = if given "unit" then svc.unit else d.unit or null;
      user = if given "user" then svc.user else d.user or null;
      settings = (d.settings or { }) // (svc.settings or { });
    };

  service =
    names: name: svc:
    let
      after = svc.after or [ ];
      unknownAfter = filter (d: !elem d names) after;
      target = svc.target or null;
    in
    if match serviceName name == null then
      fail "services.${name}" "a service name is letters, digits, '_', '.', '@', '-' (at most 64)"
    else if !isString target || target == "" then
      fail "services.${name}.target" "must be set to the version the data must reach"
    else if unknownAfter != [ ] then
      fail "services.${name}.after" "unknown service \"${builtins.head unknownAfter}\" (enabled ones: ${concatStringsSep ", " names})"
    else if !isAttrs (svc.settings or { }) then
      fail "services.${name}.settings" "must be an attribute set (the plugin's settings)"
    else if !isList (svc.migrations or [ ]) then
      fail "services.${name}.migrations" "must be a list of { version, up, down }"
    else
      compact {
        plugin = svc.plugin or null;
        inherit target;
        unit = svc.unit or null;
        user = svc.user or null;
        accept = svc.accept or [ ];
        inherit after;
        settings = svc.settings or { };
        migrations = imap0 (migration name) (svc.migrations or [ ]);
      };

  enabledServices =
    cfg: mapAttrs (withDefaults (cfg.defaults or { })) (filterAttrs (_: svc: svc.enable or true) (cfg.services or { }));
in
rec {
  inherit dateProblem;

  # services.nixos-migrate option values -> the manifest (same schema as the Python loader:
  # snake_case keys; options are camelCase in Nix)
  manifest =
    cfg:
    let
      services = enabledServices cfg;
    in
    compact {
      state_dir = cfg.stateDir or "/var/lib/nixos-migrate";
      backup_dir = cfg.backupDir or null;
      services = mapAttrs (service (attrNames services)) services;
    };

  manifestJSON = cfg: toJSON (manifest cfg);

  # the NixOS fragments of the plugins in `dir`: every <plugin>/nixos.nix there
  fragments =
    dir:
    filter builtins.pathExists (
      map (name: dir + "/${name}/nixos.nix") (
        attrNames (filterAttrs (_: kind: kind == "directory") (builtins.readDir dir))
      )
    );

  unitName = name: "nixos-migrate-${name}";

  # systemd.services entries, one oneshot per service, ordered before the service's own unit
  # and required by it, so the service never starts on data of the wrong version
  units =
    {
      cfg,
      exe,
      manifestFile,
    }:
    let
      services = enabledServices cfg;
      # checked through `manifest` first: a bad configuration fails with its option path
      checked = manifest cfg;
    in
    mapAttrs (
      name: svc:
      let
        unit = checked.services.${name}.unit or null;
        deps = map (d: "${unitName d}.service") (svc.after or [ ]);
        autoApply = svc.autoApply or false;
        command =
          if autoApply then
            [ "up" name ]
          else
            [
              "plan"
              "--no-checks"
              "--fail-if-pending"
              name
            ];
      in
      {
        description =
          if autoApply then
            "nixos-migrate: migrate the data of ${name} to ${svc.target}"
          else
            "nixos-migrate: refuse to start ${name} on data not at ${svc.target}";
        before = if unit == null then [ ] else [ unit ];
        requiredBy = if unit == null then [ ] else [ unit ];
        wantedBy = if unit == null then [ "multi-user.target" ] else [ ];
        after = [ "local-fs.target" ] ++ deps;
        requires = deps;
        environment.NIXOS_MIGRATE_MANIFEST = manifestFile;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          # service names are checked above ([A-Za-z0-9_.@-]): safe as systemd arguments
          ExecStart = concatStringsSep " " ([ exe "--manifest" manifestFile ] ++ command);
          # migrations of large data take long; never kill one half-way for a start timeout
          TimeoutStartSec = "infinity";
        };
      }
    ) (filterAttrs (n: _: checked.services ? ${n}) services);

  # systemd.services entries, one per service that has a unit: `nixos-migrate settle` once the
  # service runs (work a step left for after the downtime, e.g. PostgreSQL's planner statistics;
  # nothing when no step ran). Wanted by the service's unit, so a failure never stops the service.
  settleUnits =
    {
      cfg,
      exe,
      manifestFile,
    }:
    let
      checked = manifest cfg;
      withUnit = filterAttrs (_: svc: (svc.unit or null) != null) checked.services;
    in
    listToAttrs (
      map (name: {
        name = "${unitName name}-settle";
        value = {
          description = "nixos-migrate: finish the migration of ${name} now that it runs (e.g. planner statistics)";
          after = [ checked.services.${name}.unit ];
          wantedBy = [ checked.services.${name}.unit ];
          environment.NIXOS_MIGRATE_MANIFEST = manifestFile;
          serviceConfig = {
            Type = "oneshot";
            ExecStart = concatStringsSep " " [ exe "--manifest" manifestFile "settle" name ];
          };
        };
      }) (attrNames withUnit)
    );

  # the body of system.preSwitchChecks.nixos-migrate: $1 is the new system, $2 the action
  preSwitchCheck =
    {
      exe,
      manifestFile,
    }:
    ''
      case "''${2-}" in
        switch|boot|test|check)
          if ! ${exe} --manifest ${manifestFile} plan; then
            echo "nixos-migrate: the new configuration's migrations would be refused (above): not switching" >&2
            exit 1
          fi
          ;;
      esac
    '';
}
