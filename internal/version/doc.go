// Package version holds the converter's version and the artifact format
// version. Both feed the idempotency key of a conversion: a new format version
// makes every image eligible for conversion again.
package version
