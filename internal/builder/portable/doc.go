// Package portable is the pure-Go CIM builder: it turns one Windows layer tar
// (read with wclayer) into a classic or forked CIM (written with cim).
//
// EXPERIMENTAL: its output has not been validated against CimFS.dll. It is
// deterministic: the same layer chain gives byte-identical files.
package portable
