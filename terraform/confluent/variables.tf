variable "environment_name" {
  description = "Display name of the Confluent Cloud environment."
  type        = string
  default     = "pubcrypt"
}

variable "stream_governance_package" {
  description = "Stream Governance package of the environment: ESSENTIALS or ADVANCED. pubcrypt needs no Schema Registry; ESSENTIALS is the smaller one."
  type        = string
  default     = "ESSENTIALS"

  validation {
    condition     = contains(["ESSENTIALS", "ADVANCED"], var.stream_governance_package)
    error_message = "stream_governance_package must be ESSENTIALS or ADVANCED."
  }
}

variable "cluster_name" {
  description = "Display name of the Basic Kafka cluster."
  type        = string
  default     = "pubcrypt"
}

variable "cloud" {
  description = "Cloud that runs the cluster: AWS, GCP or AZURE."
  type        = string
  default     = "AWS"

  validation {
    condition     = contains(["AWS", "GCP", "AZURE"], var.cloud)
    error_message = "cloud must be AWS, GCP or AZURE."
  }
}

variable "region" {
  description = "Region of that cloud, e.g. eu-west-1 or us-east-2 on AWS."
  type        = string
  default     = "eu-west-1"
}

variable "availability" {
  description = "Zone configuration of the cluster. Basic clusters are SINGLE_ZONE."
  type        = string
  default     = "SINGLE_ZONE"

  validation {
    condition     = var.availability == "SINGLE_ZONE"
    error_message = "A Basic cluster is SINGLE_ZONE."
  }
}

variable "topic_partitions" {
  description = "Partitions of each topic (cannot be lowered later: a change recreates the topic)."
  type        = number
  default     = 3

  validation {
    condition     = var.topic_partitions >= 1 && floor(var.topic_partitions) == var.topic_partitions
    error_message = "topic_partitions must be a positive whole number."
  }
}

variable "large_max_message_bytes" {
  description = "max.message.bytes of purchases_large_encrypted. Basic and Standard clusters accept up to 8388608 (8 MiB); the default of other topics is 2097164."
  type        = number
  default     = 8388608

  validation {
    condition     = var.large_max_message_bytes >= 1024 && var.large_max_message_bytes <= 8388608 && floor(var.large_max_message_bytes) == var.large_max_message_bytes
    error_message = "large_max_message_bytes must be a whole number between 1024 and 8388608 (the Basic cluster maximum)."
  }
}

variable "consumer_group_prefix" {
  description = "Consumer groups the application may use must start with this prefix (kafka://pubcrypt-billing?topic=...)."
  type        = string
  default     = "pubcrypt"
}

variable "allow_idempotent_write" {
  description = "Also grant IDEMPOTENT_WRITE on the cluster, for clients that enable idempotent producers (librdkafka and Java do by default; pubcrypt's Sarama client does not)."
  type        = bool
  default     = false
}
