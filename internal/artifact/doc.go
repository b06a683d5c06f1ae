// Package artifact defines the OCI artifact cimconv publishes next to an
// image — media types, annotation keys, the config schema, the per-layer blob
// (a zstd tar of one layer's CIM files and side files) — and how nodes choose
// among several artifacts.
//
// It owns the format only: no registry I/O (see registry), no building (see
// builder), no conversion flow (see convert).
package artifact
