// Package worker is the serve loop: it takes requests from the queue, runs
// convert, heartbeats while building, acks after the artifact is pushed, and
// publishes result events.
package worker
