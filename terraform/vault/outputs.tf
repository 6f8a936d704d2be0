output "transit_mount" {
  description = "Path of the transit engine (keyring.VaultOptions.Mount)."
  value       = vault_mount.transit.path
}

output "key_names" {
  description = "Transit keys: data (envelope and transit fields), deterministic, fpe, and the naming key of subject keys."
  value = {
    data          = vault_transit_secret_backend_key.data.name
    deterministic = vault_transit_secret_backend_key.deterministic.name
    fpe           = vault_transit_secret_backend_key.fpe.name
    subjects      = vault_transit_secret_backend_key.subjects.name
  }
}

output "policies" {
  description = "Policies created."
  value       = [vault_policy.producer.name, vault_policy.consumer.name, vault_policy.operator.name, vault_policy.forget.name]
}

# A RoleID names a role, like a user name; the SecretID is the credential. Terraform does
# not create SecretIDs, so none lands in the state. Issue one per application instance:
#   vault write -f auth/approle/role/pubcrypt-producer/secret-id
#   vault write -f auth/approle/role/pubcrypt-consumer/secret-id
output "role_ids" {
  description = "AppRole RoleIDs of the producer and consumer roles. Issue SecretIDs with: vault write -f auth/approle/role/NAME/secret-id"
  value = {
    (vault_approle_auth_backend_role.producer.role_name) = vault_approle_auth_backend_role.producer.role_id
    (vault_approle_auth_backend_role.consumer.role_name) = vault_approle_auth_backend_role.consumer.role_id
  }
}

output "secret_id_commands" {
  description = "Commands that issue a SecretID for each role (run with a token allowed to)."
  value = [
    for r in [vault_approle_auth_backend_role.producer, vault_approle_auth_backend_role.consumer] :
    "vault write -f auth/${vault_auth_backend.approle.path}/role/${r.role_name}/secret-id"
  ]
}

# What each auth method needs on pubcrypt's side (flags; enc+ URLs take the same names as
# vault_auth=..., vault_role_id_file=...). The SecretID files come from secret_id_commands.
output "pubcrypt_auth_flags" {
  description = "pubcrypt flags that log each role in, by auth method."
  value = merge(
    {
      for r in [vault_approle_auth_backend_role.producer, vault_approle_auth_backend_role.consumer] :
      "approle/${r.role_name}" => "--vault-auth approle --vault-auth-mount ${vault_auth_backend.approle.path} --vault-role-id-file ROLE_ID_FILE --vault-secret-id-file SECRET_ID_FILE (role ID ${r.role_id})"
    },
    {
      for name, r in vault_jwt_auth_backend_role.roles :
      "jwt/${name}" => "--vault-auth jwt --vault-auth-mount ${r.backend} --vault-role ${name} --vault-jwt-file JWT_FILE"
    },
  )
}

output "fpe_plugin" {
  description = "Mount and key of pubcrypt's Vault FPE plugin for fields fpe(...,vault) (--vault-fpe-mount, --vault-fpe-key); mounted here only with var.fpe_plugin_sha256."
  value = {
    mount   = var.fpe_plugin_mount
    key     = var.fpe_plugin_key_name
    mounted = length(vault_mount.fpe) > 0
  }
}
