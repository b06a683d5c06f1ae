// Package fetchtest holds the end-to-end check shared by the conversion,
// service and CLI tests: fetch an image's CIM chain as a node would and
// compare what it shows with the merged view of the layers it was built from.
package fetchtest
