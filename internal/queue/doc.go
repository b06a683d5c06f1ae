// Package queue is the NATS JetStream side of cimconv: the CIMCONV stream, the
// shared request consumer, the status and chain-cache KV buckets, the
// CloudEvents message schema and an embedded nats-server for single-machine
// use.
//
// Layout:
//
//	stream CIMCONV (file storage, limits retention)
//	  cimconv.requests          io.cimconv.convert.requested events; Nats-Msg-Id = idempotency key
//	  cimconv.results.<key>     io.cimconv.convert.succeeded / .failed events
//	  cimconv.dead              DeadLetter JSON (original bytes + reason), see Dead and Replay
//	consumer "workers"          durable pull, explicit ack, AckWait, MaxDeliver, optional BackOff
//	KV cimconv-status           digest.<alg>.<hex> | ref.<hash> -> Status
//	KV cimconv-chains           value.<alg>.<hex> -> opaque bytes; claim.<alg>.<hex> -> build claim
//
// Delivery is at least once: a Delivery must be settled with Ack, Nak or
// Term; Consume NAKs what a handler leaves unsettled, and Term always stores
// a dead letter before terminating.
//
// It knows nothing of conversion: requests name an image and options, and
// chain values are opaque.
package queue
