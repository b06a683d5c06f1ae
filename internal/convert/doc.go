// Package convert runs the conversion of one image: plan the chain (diffIDs,
// chainIDs), consult the chain cache, drive a builder layer by layer, package
// the built CIMs as an OCI artifact and publish it through package registry.
//
// It knows nothing of NATS: the worker joins queue and convert.
package convert
