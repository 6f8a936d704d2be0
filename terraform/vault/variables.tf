variable "transit_mount" {
  description = "Path of the transit secrets engine (pubcrypt's default is \"transit\")."
  type        = string
  default     = "transit"
}

variable "data_key_name" {
  description = "Transit key that wraps pubcrypt's data keys and encrypts fields in \"transit\" mode."
  type        = string
  default     = "pubcrypt"
}

variable "deterministic_key_name" {
  description = "Transit key of \"deterministic\" fields (derived, convergent)."
  type        = string
  default     = "pubcrypt-det"
}

variable "fpe_key_name" {
  description = "Transit key whose HMAC derives the FF1 keys of \"fpe\" fields."
  type        = string
  default     = "pubcrypt-fpe"
}

variable "subject_naming_key_name" {
  description = "Transit key whose HMAC (version 1, always) names the per-subject keys of policies with a subject option (crypto-shredding). Never rotate it: subject keys would get new names."
  type        = string
  default     = "pubcrypt-subjects"
}

variable "fpe_plugin_sha256" {
  description = "SHA-256 of pubcrypt's Vault FPE plugin binary (vaultplugin/fpe, built by scripts/install-fpe-plugin.sh and copied into the server's plugin_directory as pubcrypt-fpe). Empty: this configuration neither registers nor mounts it; the policies still name its paths."
  type        = string
  default     = ""
}

variable "fpe_plugin_mount" {
  description = "Path at which pubcrypt's Vault FPE plugin is enabled (keyring.VaultOptions.FPEMount, default \"pubcrypt-fpe\")."
  type        = string
  default     = "pubcrypt-fpe"
}

variable "fpe_plugin_key_name" {
  description = "Key inside the FPE plugin that fields in mode fpe(vault) use (crypttopic.FieldKeys.FPE)."
  type        = string
  default     = "pubcrypt-fpe"
}

variable "auto_rotate_period" {
  description = "Seconds between automatic rotations of the transit keys; 0 turns automatic rotation off (Vault's minimum otherwise is one hour). Older versions keep decrypting."
  type        = number
  default     = 0

  validation {
    condition     = var.auto_rotate_period == 0 || var.auto_rotate_period >= 3600
    error_message = "auto_rotate_period must be 0 (off) or at least 3600 seconds."
  }
}

variable "key_deletion_allowed" {
  description = "Let Vault delete the transit keys (and so terraform destroy remove them). Deleting a key makes everything encrypted under it unreadable for good."
  type        = bool
  default     = false
}

variable "disable_upsert" {
  description = "Set the transit mount's config/keys disable_upsert, so that an encrypt call never creates a key that does not exist (a mistyped key name fails instead)."
  type        = bool
  default     = true
}

variable "approle_path" {
  description = "Path of the AppRole auth method."
  type        = string
  default     = "approle"
}

variable "token_ttl" {
  description = "TTL, in seconds, of tokens issued to the producer and consumer roles."
  type        = number
  default     = 3600
}

variable "token_max_ttl" {
  description = "Maximum TTL, in seconds, of those tokens after renewals."
  type        = number
  default     = 14400
}

variable "secret_id_ttl" {
  description = "Seconds after which a SecretID of the roles expires (0: never)."
  type        = number
  default     = 86400
}

variable "secret_id_num_uses" {
  description = "Logins a SecretID allows (0: unlimited)."
  type        = number
  default     = 0
}

variable "token_bound_cidrs" {
  description = "CIDR blocks allowed to log in with the roles and to use their tokens (empty: any)."
  type        = list(string)
  default     = []
}

variable "jwt_validation_pubkeys" {
  description = "PEM public keys that sign the workload JWTs pubcrypt logs in with (--vault-auth jwt). Empty: no JWT auth method is created."
  type        = list(string)
  default     = []
}

variable "jwt_bound_audiences" {
  description = "The aud claim the JWTs must carry."
  type        = list(string)
  default     = ["pubcrypt"]
}

variable "jwt_path" {
  description = "Path of the JWT auth method."
  type        = string
  default     = "jwt"
}
