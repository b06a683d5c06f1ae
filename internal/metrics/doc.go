// Package metrics names and registers every Prometheus collector cimconv
// exports. It is a leaf: no other cimconv package is imported here, and no
// metric name is spelled outside this package.
package metrics
