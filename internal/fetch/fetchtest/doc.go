// Package fetchtest holds the end-to-end checks shared by the conversion,
// service and CLI tests: fetch an image's CIM chain as a node would and
// compare what it shows with the merged view of the layers it was built
// from, and list the artifacts a registry holds for an image, through a
// registry client made for the test.
package fetchtest
