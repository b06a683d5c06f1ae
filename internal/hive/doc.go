// Package hive reads, checks, writes and merges Windows registry hive files
// (the "regf" format) in pure Go, so a Linux worker can produce the merged
// Hives/<NAME>_BASE files a Windows container layer needs.
//
// Open parses a hive and validates every offset and size it follows; a dirty
// hive (pending transaction-log data) and a hive with a bad header checksum
// are refused. Keys load lazily, so a merge touches only the parts of a large
// base hive that a delta changes. Check is the strict checker (sort order,
// hashes, counts, free space, security-descriptor reference counts). Write
// produces a fresh compact hive, byte-identical for the same tree. Merge
// applies a delta hive's layered keys (tombstones, supersede-local,
// supersede-tree, inherit class) onto a base, as offreg's ORMergeHives does
// for hcsshim.
//
// The layout, the merge rules, their public sources and every choice made
// where those sources stop are in docs/hive-format.md. None of it has been
// compared with offreg's output on Windows.
//
// It owns the byte format and the merge only. Which layer's hives are merged
// with which is the portable builder's business (internal/builder/portable).
package hive
