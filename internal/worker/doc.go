// Package worker is the serve loop: it takes requests from the queue, runs
// convert, heartbeats while building, acks after the artifact is pushed, and
// publishes result events.
//
// It joins queue and conversion through the Converter interface only, and
// owns the retry policy: transient errors are NAKed with exponential backoff,
// permanent ones (and the last delivery) are dead-lettered with a reason from
// the metrics vocabulary. RunLoad measures the queue path under load.
package worker
