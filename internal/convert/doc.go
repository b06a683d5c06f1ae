// Package convert runs the conversion of one image: plan the chain (diffIDs,
// chainIDs), consult the chain cache, drive a builder layer by layer, package
// the built CIMs as an OCI artifact and publish it through package registry.
//
// One file per stage: convert.go (the flow), plan.go, build.go (the build
// pipeline: prepare ahead, finish in chain order, pack behind), claims.go and
// shared.go (the shared chain cache), materialize.go (cached parents on
// disk), pack.go, cache.go, record.go (BuiltLayer <-> artifact.PackedLayer),
// manifest.go (the artifact format itself lives in package artifact), push.go
// and layout.go (--output).
//
// It knows nothing of NATS: the worker joins queue and convert.
package convert
