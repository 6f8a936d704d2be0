# Vault for pubcrypt: the transit engine and its three keys, one policy per role
# (producer encrypts, consumer decrypts, operator rotates), and AppRole logins for the
# producer and the consumer.
#
# Envelope encryption: the producer asks transit/datakey/plaintext/KEY for a data key
# (plaintext + wrapped), encrypts locally and sends the wrapped key with the message; the
# consumer unwraps it with transit/decrypt/KEY. A producer therefore never decrypts and a
# consumer never creates data keys or encrypts: a stolen producer credential reads no
# message body and no "transit" field that was sent. Two field modes are weaker by
# nature: an "fpe" field can be decoded by the producer too (both sides hold the same
# FF1 key, see below), and a "deterministic" field can be confirmed by encrypting a guess.
# Put only what the producer may know anyway into those modes. "fpe(vault)" fields have
# the shape of "fpe" fields without that weakness: FF1 runs inside Vault, in pubcrypt's
# plugin (vaultplugin/fpe), whose key never leaves it, and the producer may only encode.

locals {
  mount = vault_mount.transit.path

  # pubcrypt's FPE plugin: named in the policies whether or not this configuration
  # registers it (var.fpe_plugin_sha256), so that a plugin mounted by hand is covered.
  fpe_mount = var.fpe_plugin_mount
  fpe_key   = var.fpe_plugin_key_name

  key_names = [
    vault_transit_secret_backend_key.data.name,
    vault_transit_secret_backend_key.deterministic.name,
    vault_transit_secret_backend_key.fpe.name,
  ]
}

resource "vault_mount" "transit" {
  path        = var.transit_mount
  type        = "transit"
  description = "pubcrypt: keys that wrap data keys and encrypt fields of messages"
}

# Refuse implicit key creation on the whole mount: with upsert, an "encrypt" on a
# mistyped key name (by a token that has "create") would silently make a new key, and for
# deterministic fields one that is not convergent. The policies below grant "update",
# never "create", so this is a second lock on the same door.
resource "vault_generic_endpoint" "transit_disable_upsert" {
  count = var.disable_upsert ? 1 : 0

  path                 = "${local.mount}/config/keys"
  data_json            = jsonencode({ disable_upsert = true })
  ignore_absent_fields = true
  disable_delete       = true # the endpoint has no DELETE; destroy leaves the setting
}

# --- keys ---------------------------------------------------------------------------------

# Wraps the data keys of message bodies (envelope) and encrypts fields in "transit" mode.
resource "vault_transit_secret_backend_key" "data" {
  backend            = local.mount
  name               = var.data_key_name
  type               = "aes256-gcm96"
  deletion_allowed   = var.key_deletion_allowed
  auto_rotate_period = var.auto_rotate_period
}

# "deterministic" fields: derived = true makes every call name a context (pubcrypt uses
# the field's path) and derives a key per context; convergent_encryption = true makes
# equal plaintexts in the same context give equal ciphertexts, so they can be joined or
# looked up without decrypting. Both are fixed at creation.
resource "vault_transit_secret_backend_key" "deterministic" {
  backend               = local.mount
  name                  = var.deterministic_key_name
  type                  = "aes256-gcm96"
  derived               = true
  convergent_encryption = true
  deletion_allowed      = var.key_deletion_allowed
  auto_rotate_period    = var.auto_rotate_period
}

# "fpe" fields (format-preserving, FF1). FF1 needs a raw AES key, which transit never
# exports. pubcrypt derives it inside Vault instead: the FF1 key of version N is
# HMAC-SHA-256 under this key's version-N HMAC key (transit/hmac/KEY/sha2-256 with
# key_version N) of a fixed label. Only the derived key leaves Vault, it is versioned and
# rotates with this key, and older versions keep decoding. Because FF1 is symmetric with
# no wrapped key to carry, BOTH sides derive the same key: the producer to encode, the
# consumer to decode. So hmac is granted to both policies, and reading the key's
# configuration (transit/keys/KEY: versions, min_decryption_version) as well.
resource "vault_transit_secret_backend_key" "fpe" {
  backend            = local.mount
  name               = var.fpe_key_name
  type               = "aes256-gcm96"
  deletion_allowed   = var.key_deletion_allowed
  auto_rotate_period = var.auto_rotate_period
}

# Names the key of each subject of a policy with a subject option (subject=customer_id):
# pubcrypt-subject- and the first 16 bytes, in hex, of this key's HMAC-SHA-256 of the
# subject ID, always under version 1 (so it is not in the operator's rotation list). The
# subject keys themselves are created by producers on first use and destroyed, version by
# version, by `pubcrypt forget` (pubcrypt-forget policy below). Terraform does not manage
# them: there is one per subject.
resource "vault_transit_secret_backend_key" "subjects" {
  backend          = local.mount
  name             = var.subject_naming_key_name
  type             = "aes256-gcm96"
  deletion_allowed = var.key_deletion_allowed
}

# "fpe(vault)" fields: pubcrypt's Vault plugin runs FF1 inside Vault. The binary must be in
# the server's plugin_directory under the name pubcrypt-fpe; its key is generated in the
# plugin's storage (seal-wrapped where the server supports it) and no path returns it.
# MOUNT/encode/KEY and MOUNT/decode/KEY are separate paths, so the producer policy grants
# the first and the consumer policy the second.
resource "vault_plugin" "fpe" {
  count   = var.fpe_plugin_sha256 != "" ? 1 : 0
  type    = "secret"
  name    = "pubcrypt-fpe"
  command = "pubcrypt-fpe"
  sha256  = var.fpe_plugin_sha256
}

resource "vault_mount" "fpe" {
  count       = var.fpe_plugin_sha256 != "" ? 1 : 0
  path        = local.fpe_mount
  type        = vault_plugin.fpe[0].name
  description = "pubcrypt: format-preserving encryption with keys that never leave Vault"
}

# Writing a key that exists changes nothing, so this is safe to apply again. The plugin
# has no delete: destroying this resource leaves the key, and what it encoded readable.
resource "vault_generic_endpoint" "fpe_key" {
  count                = var.fpe_plugin_sha256 != "" ? 1 : 0
  path                 = "${vault_mount.fpe[0].path}/keys/${local.fpe_key}"
  data_json            = jsonencode({})
  ignore_absent_fields = true
  disable_delete       = true
}

# --- policies -----------------------------------------------------------------------------

# Encrypt only. "update", not "create": with "create" Vault would upsert missing keys.
# No decrypt, rewrap or datakey/wrapped anywhere.
resource "vault_policy" "producer" {
  name   = "pubcrypt-producer"
  policy = <<-EOT
    # Data keys for envelope encryption of message bodies.
    path "${local.mount}/datakey/plaintext/${vault_transit_secret_backend_key.data.name}" {
      capabilities = ["update"]
    }

    # Fields in "transit" mode.
    path "${local.mount}/encrypt/${vault_transit_secret_backend_key.data.name}" {
      capabilities = ["update"]
    }

    # Fields in "deterministic" mode, and the check that the key is derived and convergent.
    path "${local.mount}/encrypt/${vault_transit_secret_backend_key.deterministic.name}" {
      capabilities = ["update"]
    }
    path "${local.mount}/keys/${vault_transit_secret_backend_key.deterministic.name}" {
      capabilities = ["read"]
    }

    # Fields in "fpe" mode: derive the FF1 key (encode) and read the key's versions.
    path "${local.mount}/hmac/${vault_transit_secret_backend_key.fpe.name}/sha2-256" {
      capabilities = ["update"]
    }
    path "${local.mount}/keys/${vault_transit_secret_backend_key.fpe.name}" {
      capabilities = ["read"]
    }

    # Fields in "fpe(vault)" mode: encode inside Vault. No decode, no key read: the
    # producer cannot turn a card on the wire back into the card.
    path "${local.fpe_mount}/encode/${local.fpe_key}" {
      capabilities = ["update"]
    }

    # Policies with a subject (crypto-shredding): name a subject's key, create it on
    # first use, and protect under it (data keys, transit fields, FPE keys). Transit's
    # keys/NAME takes "update" even to create, and the glob also covers NAME/config,
    # NAME/trim and NAME/rotate; the only parameter allowed is the key type, so the
    # producer can create a key (or rotate one, which destroys nothing) but neither
    # raise its minimum versions nor trim it: it cannot forget anyone.
    path "${local.mount}/hmac/${vault_transit_secret_backend_key.subjects.name}/sha2-256" {
      capabilities = ["update"]
    }
    path "${local.mount}/keys/pubcrypt-subject-*" {
      capabilities = ["update"]
      allowed_parameters = {
        "type" = ["aes256-gcm96"]
      }
    }
    path "${local.mount}/datakey/plaintext/pubcrypt-subject-*" {
      capabilities = ["update"]
    }
    path "${local.mount}/encrypt/pubcrypt-subject-*" {
      capabilities = ["update"]
    }
    path "${local.mount}/hmac/pubcrypt-subject-*" {
      capabilities = ["update"]
    }
  EOT
}

# Decrypt only: unwrap data keys, decrypt fields. No datakey, no encrypt.
resource "vault_policy" "consumer" {
  name   = "pubcrypt-consumer"
  policy = <<-EOT
    # Unwrap data keys (envelope) and decrypt fields in "transit" mode.
    path "${local.mount}/decrypt/${vault_transit_secret_backend_key.data.name}" {
      capabilities = ["update"]
    }

    # Fields in "deterministic" mode, and the check that the key is derived and convergent.
    path "${local.mount}/decrypt/${vault_transit_secret_backend_key.deterministic.name}" {
      capabilities = ["update"]
    }
    path "${local.mount}/keys/${vault_transit_secret_backend_key.deterministic.name}" {
      capabilities = ["read"]
    }

    # Fields in "fpe" mode: derive the same FF1 key (decode) and read the key's versions.
    path "${local.mount}/hmac/${vault_transit_secret_backend_key.fpe.name}/sha2-256" {
      capabilities = ["update"]
    }
    path "${local.mount}/keys/${vault_transit_secret_backend_key.fpe.name}" {
      capabilities = ["read"]
    }

    # Fields in "fpe(vault)" mode: decode inside Vault, under the version the message
    # names. No encode.
    path "${local.fpe_mount}/decode/${local.fpe_key}" {
      capabilities = ["update"]
    }

    # Messages of policies with a subject: unwrap and decrypt under the subject's key,
    # derive its FPE key and read its versions. A forgotten subject's versions are gone:
    # its messages fail with ErrShredded.
    path "${local.mount}/decrypt/pubcrypt-subject-*" {
      capabilities = ["update"]
    }
    path "${local.mount}/hmac/pubcrypt-subject-*" {
      capabilities = ["update"]
    }
    path "${local.mount}/keys/pubcrypt-subject-*" {
      capabilities = ["read"]
    }
  EOT
}

# Crypto-shredding (`pubcrypt forget --subject ID`), for the people who handle erasure
# requests, not applications: name the subject's key, then rotate it, raise its minimum
# versions and trim every older version out of Vault. It encrypts and decrypts nothing.
# Deleting or exporting a key stays denied: Forget keeps the name as a tombstone.
resource "vault_policy" "forget" {
  name   = "pubcrypt-forget"
  policy = <<-EOT
    path "${local.mount}/hmac/${vault_transit_secret_backend_key.subjects.name}/sha2-256" {
      capabilities = ["update"]
    }
    path "${local.mount}/keys/pubcrypt-subject-*" {
      capabilities = ["read", "update"]
      denied_parameters = {
        "deletion_allowed"       = []
        "exportable"             = []
        "allow_plaintext_backup" = []
      }
    }
  EOT
}

# Rotation and retirement of pubcrypt's keys, for people (vault token create
# -policy=pubcrypt-operator), not applications. Neither encrypts nor decrypts. The config
# endpoint is limited to rotation settings (auto_rotate_period, min_decryption_version,
# min_encryption_version): the parameters that would let keys be deleted or leave Vault
# are denied. Keys are named one by one; "${local.mount}/keys/+/rotate" would cover every
# key of the mount.
resource "vault_policy" "operator" {
  name = "pubcrypt-operator"
  policy = join("\n", concat([for k in local.key_names : <<-EOT
    path "${local.mount}/keys/${k}" {
      capabilities = ["read"]
    }
    path "${local.mount}/keys/${k}/rotate" {
      capabilities = ["update"]
    }
    path "${local.mount}/keys/${k}/config" {
      capabilities = ["update"]
      denied_parameters = {
        "deletion_allowed"       = []
        "exportable"             = []
        "allow_plaintext_backup" = []
      }
    }
  EOT
    ], [<<-EOT
    # The FPE plugin's key: read its versions, rotate, retire old versions.
    path "${local.fpe_mount}/keys/${local.fpe_key}" {
      capabilities = ["read"]
    }
    path "${local.fpe_mount}/keys/${local.fpe_key}/rotate" {
      capabilities = ["update"]
    }
    path "${local.fpe_mount}/keys/${local.fpe_key}/config" {
      capabilities = ["update"]
    }
  EOT
  ]))
}

# --- AppRole logins -----------------------------------------------------------------------

resource "vault_auth_backend" "approle" {
  type        = "approle"
  path        = var.approle_path
  description = "pubcrypt producers and consumers"
}

# Login: vault write auth/approle/login role_id=... secret_id=... ; the token carries only
# the role's policy (plus Vault's "default", which lets a token look itself up and renew).
resource "vault_approle_auth_backend_role" "producer" {
  backend               = vault_auth_backend.approle.path
  role_name             = "pubcrypt-producer"
  token_policies        = [vault_policy.producer.name]
  token_ttl             = var.token_ttl
  token_max_ttl         = var.token_max_ttl
  token_bound_cidrs     = var.token_bound_cidrs
  secret_id_bound_cidrs = var.token_bound_cidrs
  secret_id_ttl         = var.secret_id_ttl
  secret_id_num_uses    = var.secret_id_num_uses
}

resource "vault_approle_auth_backend_role" "consumer" {
  backend               = vault_auth_backend.approle.path
  role_name             = "pubcrypt-consumer"
  token_policies        = [vault_policy.consumer.name]
  token_ttl             = var.token_ttl
  token_max_ttl         = var.token_max_ttl
  token_bound_cidrs     = var.token_bound_cidrs
  secret_id_bound_cidrs = var.token_bound_cidrs
  secret_id_ttl         = var.secret_id_ttl
  secret_id_num_uses    = var.secret_id_num_uses
}

# --- JWT logins (workload identity), only with var.jwt_validation_pubkeys ----------------------

# pubcrypt --vault-auth jwt --vault-role pubcrypt-producer --vault-jwt-file /path/token.jwt;
# the JWT file is read again at each login, so a rotated identity token is picked up. Its
# "sub" claim names the application.
resource "vault_jwt_auth_backend" "jwt" {
  count                  = length(var.jwt_validation_pubkeys) > 0 ? 1 : 0
  path                   = var.jwt_path
  description            = "pubcrypt producers and consumers (workload JWTs)"
  jwt_validation_pubkeys = var.jwt_validation_pubkeys
}

resource "vault_jwt_auth_backend_role" "roles" {
  for_each        = length(var.jwt_validation_pubkeys) > 0 ? { "pubcrypt-producer" = vault_policy.producer.name, "pubcrypt-consumer" = vault_policy.consumer.name } : {}
  backend         = vault_jwt_auth_backend.jwt[0].path
  role_name       = each.key
  role_type       = "jwt"
  bound_audiences = var.jwt_bound_audiences
  user_claim      = "sub"
  token_policies  = [each.value]
  token_ttl       = var.token_ttl
  token_max_ttl   = var.token_max_ttl
}
