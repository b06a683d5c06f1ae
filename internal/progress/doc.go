// Package progress shows the progress of long CLI work on a terminal: one
// line rewritten in place on a TTY, throttled plain lines elsewhere, nothing
// when disabled (e.g. with --json, whose stdout must hold JSON only).
package progress
