terraform {
  required_version = ">= 1.5"

  required_providers {
    # https://registry.terraform.io/providers/confluentinc/confluent/latest/docs
    confluent = {
      source  = "confluentinc/confluent"
      version = "~> 2.0"
    }
  }
}

# The provider reads the Confluent Cloud API key of an account allowed to create
# environments (OrganizationAdmin, or EnvironmentAdmin on an existing one) from the
# environment: export CONFLUENT_CLOUD_API_KEY=... CONFLUENT_CLOUD_API_SECRET=...
# Nothing secret is written in these files.
provider "confluent" {}
