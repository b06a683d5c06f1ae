// Package portable is the pure-Go CIM builder: it turns one Windows layer tar
// (read with wclayer) into a classic or forked CIM (written with cim).
// Prepare streams a layer and stages its data; Finish writes the metadata on
// top of the parent and commits (builder.TwoPhase), so that every layer's
// data can be written concurrently and only the metadata is done in chain
// order. BuildLayer is Prepare then Finish: there is one build path.
//
// Entries apply as wclayer.MergeView applies them, which ExpectedView (and
// so `cim verify`) checks: a whiteout of a path that does not exist (below
// a missing directory or a file included) removes and creates nothing, and a
// directory a tar omits is created for the entries below it, again if the
// layer removed it earlier (a whiteout, or a file listed in its place).
//
// EXPERIMENTAL: its output has not been validated against CimFS.dll. It is
// deterministic: the same layer chain gives byte-identical files.
package portable
