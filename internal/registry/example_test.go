package registry_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"testing"

	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Resolve an index to the Windows manifests a Windows Server 2025 host can
// run, and stream their layers as stored.
func Example() {
	t := &testing.T{} // registrytest wants a testing.TB; examples have none
	host := registrytest.NewReferrersRegistry(t)
	var manifests []v1.Descriptor
	for _, v := range []string{"10.0.17763.5000", "10.0.20348.2031", "10.0.26100.100"} {
		layer := registrytest.Gzip(t, registrytest.Tar(t, "Files/hello.txt", "hello "+v))
		manifests = append(manifests, registrytest.PushImage(t, host+"/win/app:"+v, [][]byte{layer}, v1.Platform{OSVersion: v}))
	}
	registrytest.PushIndex(t, host+"/win/app:latest", manifests...)

	c, err := registry.New()
	if err != nil {
		log.Fatal(err)
	}
	policy, err := registry.ParseOSVersionPolicy("compatible:26100")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	targets, err := c.Resolve(ctx, host+"/win/app:latest", v1.Platform{}, policy)
	if err != nil {
		log.Fatal(err)
	}
	for _, tg := range targets {
		for _, l := range tg.Layers {
			rc, err := c.OpenLayer(ctx, tg, l)
			if err != nil {
				log.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc) // digest and size checked as it streams
			if err != nil {
				log.Fatal(err)
			}
			rc.Close()
			fmt.Println(tg.Platform.OSVersion, l.MediaType, n == l.Size)
		}
	}
	// Output:
	// 10.0.20348.2031 application/vnd.oci.image.layer.v1.tar+gzip true
	// 10.0.26100.100 application/vnd.oci.image.layer.v1.tar+gzip true
}
