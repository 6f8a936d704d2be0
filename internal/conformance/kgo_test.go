package conformance

import "testing"

// TestConformanceKgo runs the suite on kgo:// (franz-go via package kgopubsub).
func TestConformanceKgo(t *testing.T) { runKafkaConformance(t, "kgo") }
