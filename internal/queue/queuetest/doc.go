// Package queuetest is the one place tests set up NATS for the queue, worker,
// service and CLI packages: an embedded nats-server (the version in go.mod)
// or a separate nats-server process (e.g. Debian's 2.9, the oldest supported
// server), both restartable on the same port and store, plus the small
// helpers those tests share (a bounded context, a bounded wait).
//
// It does not import package queue, so queue's own tests can use it.
package queuetest
