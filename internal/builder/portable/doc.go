// Package portable is the pure-Go CIM builder: it turns one Windows layer tar
// (read with wclayer) into a classic or forked CIM (written with cim).
// BuildLayer does it in one pass; Prepare and Finish (builder.TwoPhase) split
// it so that every layer's data is written concurrently and only the
// metadata is done in chain order, with byte-identical output.
//
// EXPERIMENTAL: its output has not been validated against CimFS.dll. It is
// deterministic: the same layer chain gives byte-identical files.
package portable
