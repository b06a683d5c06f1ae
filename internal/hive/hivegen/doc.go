// Package hivegen generates registry hives for tests, fixtures and
// benchmarks: small base hives and container delta hives shaped the way
// offreg writes them (pass-through keys with inherit class, tombstoned keys
// and values, supersede-tree and supersede-local keys), and large
// SOFTWARE-sized pairs for the merge benchmark. Everything is deterministic.
package hivegen
