// Package queue is the NATS JetStream side of cimconv: the CIMCONV stream, the
// shared request consumer, the status and chain-cache KV buckets, the
// CloudEvents message schema and an embedded nats-server for single-machine
// use.
//
// It knows nothing of conversion.
package queue
