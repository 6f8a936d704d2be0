package cryptsub_test

import _ "github.com/pubcrypt/pubcrypt/internal/broker/drivers" // the tests open mem://, Pub/Sub, SQS, NATS and RabbitMQ URLs
