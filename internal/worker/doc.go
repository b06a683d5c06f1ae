// Package worker is the serve loop: it takes requests from the queue, runs
// convert, heartbeats while building, acks after the artifact is pushed, and
// publishes result events.
//
// It is where queue and conversion meet, and the only place they do: the
// loop sees a conversion through the Converter interface, and
// ConvertAdapter maps queue requests onto package convert (including the
// shared chain cache and the classification of errors into transient and
// permanent). It owns the retry policy: transient errors are NAKed with
// exponential backoff, permanent ones (and the last delivery) are
// dead-lettered with a reason from the metrics vocabulary. RunLoad measures
// the queue path under load.
package worker
