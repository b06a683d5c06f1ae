// Package allowlist parses and matches registry allowlists: entries of the
// form host[:port][/repository-prefix], matched on path-element boundaries.
// The webhook receiver (which events may queue work) and the worker (which
// registries a request may make it contact) share it.
package allowlist
