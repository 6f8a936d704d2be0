# Confluent Cloud for pubcrypt: one environment, one Basic Kafka cluster, the three topics
# of the demo, and two service accounts:
#
#   app-manager  CloudClusterAdmin on the cluster. Terraform uses its Kafka API key to
#                create the topics and ACLs; it is not handed to applications.
#   app-client   the producers and consumers. ACLs only: WRITE and READ on the three
#                topics, READ on consumer groups starting with var.consumer_group_prefix.
#                Its API key goes into client.properties (see outputs.tf).
#
# The broker only ever sees pubcrypt's ciphertext; these ACLs decide who may move it,
# Vault's policies (../vault) decide who may read it.

locals {
  # Topic name => topic settings. purchases carries plaintext (the demo's "before"),
  # the two others pubcrypt's envelopes; the large one takes bigger messages.
  topics = {
    purchases                 = {}
    purchases_encrypted       = {}
    purchases_large_encrypted = { "max.message.bytes" = tostring(var.large_max_message_bytes) }
  }

  # The operations the application's principal gets on every topic. READ and WRITE imply
  # DESCRIBE (metadata, offsets), so nothing else is needed to produce and consume.
  topic_operations = ["READ", "WRITE"]

  topic_acls = {
    for pair in setproduct(keys(local.topics), local.topic_operations) :
    "${pair[0]}-${lower(pair[1])}" => { topic = pair[0], operation = pair[1] }
  }
}

resource "confluent_environment" "pubcrypt" {
  display_name = var.environment_name

  # Optional in provider 2.x (Confluent picks ESSENTIALS when it is left out); stated
  # here so that a plan never shows an unexpected package.
  stream_governance {
    package = var.stream_governance_package
  }
}

resource "confluent_kafka_cluster" "basic" {
  display_name = var.cluster_name
  availability = var.availability
  cloud        = var.cloud
  region       = var.region
  basic {}

  environment {
    id = confluent_environment.pubcrypt.id
  }
}

# --- app-manager: administers the cluster for Terraform ----------------------------------

resource "confluent_service_account" "app_manager" {
  display_name = "${var.cluster_name}-app-manager"
  description  = "Creates topics and ACLs of the '${var.cluster_name}' cluster (Terraform)"
}

resource "confluent_role_binding" "app_manager_cluster_admin" {
  principal   = "User:${confluent_service_account.app_manager.id}"
  role_name   = "CloudClusterAdmin"
  crn_pattern = confluent_kafka_cluster.basic.rbac_crn
}

resource "confluent_api_key" "app_manager" {
  display_name = "${var.cluster_name}-app-manager-kafka-api-key"
  description  = "Kafka API key of the app-manager service account"

  owner {
    id          = confluent_service_account.app_manager.id
    api_version = confluent_service_account.app_manager.api_version
    kind        = confluent_service_account.app_manager.kind
  }

  managed_resource {
    id          = confluent_kafka_cluster.basic.id
    api_version = confluent_kafka_cluster.basic.api_version
    kind        = confluent_kafka_cluster.basic.kind

    environment {
      id = confluent_environment.pubcrypt.id
    }
  }

  # The key is only useful once the role binding exists; depending on it here (rather
  # than in every topic and ACL) orders all of them after the binding.
  depends_on = [confluent_role_binding.app_manager_cluster_admin]
}

resource "confluent_kafka_topic" "topics" {
  for_each = local.topics

  kafka_cluster {
    id = confluent_kafka_cluster.basic.id
  }
  topic_name       = each.key
  partitions_count = var.topic_partitions
  rest_endpoint    = confluent_kafka_cluster.basic.rest_endpoint
  config           = length(each.value) > 0 ? each.value : null

  credentials {
    key    = confluent_api_key.app_manager.id
    secret = confluent_api_key.app_manager.secret
  }
}

# --- app-client: the producers and consumers, least privilege ----------------------------

resource "confluent_service_account" "app_client" {
  display_name = "${var.cluster_name}-app-client"
  description  = "pubcrypt producers and consumers of the '${var.cluster_name}' cluster"
}

resource "confluent_api_key" "app_client" {
  display_name = "${var.cluster_name}-app-client-kafka-api-key"
  description  = "Kafka API key of the app-client service account (client.properties)"

  owner {
    id          = confluent_service_account.app_client.id
    api_version = confluent_service_account.app_client.api_version
    kind        = confluent_service_account.app_client.kind
  }

  managed_resource {
    id          = confluent_kafka_cluster.basic.id
    api_version = confluent_kafka_cluster.basic.api_version
    kind        = confluent_kafka_cluster.basic.kind

    environment {
      id = confluent_environment.pubcrypt.id
    }
  }
}

# READ and WRITE on each of the three topics, by literal name: no other topic, and no
# CREATE, DELETE or ALTER_CONFIGS anywhere.
resource "confluent_kafka_acl" "app_client_topics" {
  for_each = local.topic_acls

  kafka_cluster {
    id = confluent_kafka_cluster.basic.id
  }
  resource_type = "TOPIC"
  resource_name = confluent_kafka_topic.topics[each.value.topic].topic_name
  pattern_type  = "LITERAL"
  principal     = "User:${confluent_service_account.app_client.id}"
  host          = "*"
  operation     = each.value.operation
  permission    = "ALLOW"
  rest_endpoint = confluent_kafka_cluster.basic.rest_endpoint

  credentials {
    key    = confluent_api_key.app_manager.id
    secret = confluent_api_key.app_manager.secret
  }
}

# Consuming in a group needs READ on the group as well as on the topic. Only groups whose
# id starts with the prefix, e.g. kafka://pubcrypt-billing?topic=purchases_encrypted.
resource "confluent_kafka_acl" "app_client_groups" {
  kafka_cluster {
    id = confluent_kafka_cluster.basic.id
  }
  resource_type = "GROUP"
  resource_name = var.consumer_group_prefix
  pattern_type  = "PREFIXED"
  principal     = "User:${confluent_service_account.app_client.id}"
  host          = "*"
  operation     = "READ"
  permission    = "ALLOW"
  rest_endpoint = confluent_kafka_cluster.basic.rest_endpoint

  credentials {
    key    = confluent_api_key.app_manager.id
    secret = confluent_api_key.app_manager.secret
  }
}

# Only for clients with idempotent producers (enable.idempotence=true), off by default.
resource "confluent_kafka_acl" "app_client_idempotent_write" {
  count = var.allow_idempotent_write ? 1 : 0

  kafka_cluster {
    id = confluent_kafka_cluster.basic.id
  }
  resource_type = "CLUSTER"
  resource_name = "kafka-cluster"
  pattern_type  = "LITERAL"
  principal     = "User:${confluent_service_account.app_client.id}"
  host          = "*"
  operation     = "IDEMPOTENT_WRITE"
  permission    = "ALLOW"
  rest_endpoint = confluent_kafka_cluster.basic.rest_endpoint

  credentials {
    key    = confluent_api_key.app_manager.id
    secret = confluent_api_key.app_manager.secret
  }
}
