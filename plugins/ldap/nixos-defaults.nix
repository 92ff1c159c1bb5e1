# What the ldap plugin takes from services.openldap, for a service of this plugin however it is
# declared: its unit, its user and settings (the cn=config directory, the directory holding the
# databases, the package map with the current and previous versions). Builtins only: the tests
# evaluate it without nixpkgs. Explicit settings win over these.
{
  packages, # version (2.4, 2.5, 2.6) -> store path, the current package's and the previous ones'
  configDir ? null, # services.openldap.configDir (null: the module's generated /etc/openldap/slapd.d)
  databaseDirs ? [ ], # the olcDbDirectory of every database in services.openldap.settings
}:
{
  unit = "openldap.service";
  user = "openldap";
  settings = {
    config_dir = if configDir != null then configDir else "/etc/openldap/slapd.d";
    # every database's directory must be the data directory or inside it
    data_dir = if builtins.length databaseDirs == 1 then builtins.head databaseDirs else "/var/lib/openldap";
    inherit packages;
  };
}
