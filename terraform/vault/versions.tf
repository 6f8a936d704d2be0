terraform {
  # Provider 5.x supports Terraform 1.11 and later.
  required_version = ">= 1.11"

  required_providers {
    # https://registry.terraform.io/providers/hashicorp/vault/latest/docs
    vault = {
      source  = "hashicorp/vault"
      version = "~> 5.0"
    }
  }
}

# Address and token come from the environment: export VAULT_ADDR=... VAULT_TOKEN=...
# (a token allowed to mount secrets engines, enable auth methods and write policies).
# Provider 5.x supports Vault servers 1.14 and later.
provider "vault" {}
