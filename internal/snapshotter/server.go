package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"net"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/snapshots"
	"google.golang.org/grpc"
)

// Serve answers containerd's snapshots gRPC API for sn on l until ctx ends.
// containerd reaches it as a proxy plugin:
//
//	[proxy_plugins.cimconv]
//	  type = "snapshot"
//	  address = "<l's address>"
func Serve(ctx context.Context, l net.Listener, sn snapshots.Snapshotter) error {
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		srv.GracefulStop()
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, grpc.ErrServerStopped) {
			return nil
		}
		return fmt.Errorf("snapshots gRPC server: %w", err)
	}
}
