// Command converter converts Windows container images into pre-built CimFS
// images (CIMs) and publishes them as OCI artifacts referring to the image.
//
// Package main is the CLI only: flag parsing and wiring of the internal
// packages, one command per file. No conversion logic lives here.
package main
