//go:build fault && linux

package fault

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/testport"
)

// natsNode is one nats-server process with JetStream, its store on disk, so
// a SIGKILLed node restarts with its data.
type natsNode struct {
	*proc
	serverName string
	port       int
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// startNATS starts a single JetStream server.
func startNATS(t *testing.T, logs, bin string) *natsNode {
	t.Helper()
	n := &natsNode{serverName: "n0", port: testport.Port(t)}
	n.proc = newProc(t, logs, "nats-"+n.serverName, bin,
		"-a", "127.0.0.1", "-p", fmt.Sprint(n.port), "-n", n.serverName,
		"-js", "-sd", filepath.Join(t.TempDir(), "store"))
	n.start()
	waitNATS(t, n.url(), 30*time.Second)
	return n
}

// startCluster starts size JetStream servers routed to each other on
// loopback (cluster "cimconv").
func startCluster(t *testing.T, logs, bin string, size int) []*natsNode {
	t.Helper()
	nodes := make([]*natsNode, size)
	cports := make([]int, size)
	var routes []string
	for i := range nodes {
		nodes[i] = &natsNode{serverName: fmt.Sprintf("n%d", i), port: testport.Port(t)}
		cports[i] = testport.Port(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cports[i]))
	}
	for i, n := range nodes {
		n.proc = newProc(t, logs, "nats-"+n.serverName, bin,
			"-a", "127.0.0.1", "-p", fmt.Sprint(n.port), "-n", n.serverName,
			"-js", "-sd", filepath.Join(t.TempDir(), "store"),
			"--cluster_name", "cimconv", "--cluster", fmt.Sprintf("nats://127.0.0.1:%d", cports[i]),
			"--routes", strings.Join(routes, ","))
		n.start()
	}
	// JetStream answers once the meta group has a leader.
	waitNATS(t, clusterURL(nodes), 60*time.Second)
	return nodes
}

func clusterURL(nodes []*natsNode) string {
	var u []string
	for _, n := range nodes {
		u = append(u, n.url())
	}
	return strings.Join(u, ",")
}

// waitNATS waits until JetStream answers at url.
func waitNATS(t *testing.T, url string, d time.Duration) {
	t.Helper()
	ok := waitFor(d, func() bool {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err != nil {
			return false
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err == nil
	})
	if !ok {
		t.Fatalf("JetStream at %s not ready within %v", url, d)
	}
}

// client is the test's own NATS connection: the submitter, the status
// recorder and the auditor of results and dead letters. It reconnects
// forever, as the service's clients do.
type client struct {
	nc *nats.Conn
	js jetstream.JetStream
	q  *queue.Queue
}

func newClient(t *testing.T, url string) *client {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond), nats.Name("fault-suite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Bind only: the workers provision (with their replica count).
	var q *queue.Queue
	if !waitFor(30*time.Second, func() bool {
		q, err = queue.Open(ctx, nc, queue.WithProvision(false))
		return err == nil
	}) {
		t.Fatalf("binding the queue: %v", err)
	}
	return &client{nc: nc, js: js, q: q}
}

// submit queues a conversion of image and returns its idempotency key.
func (c *client) submit(t *testing.T, image string) string {
	t.Helper()
	req := queue.Request{Image: image, Requester: "fault-suite"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.q.Submit(ctx, req); err != nil {
		t.Fatalf("submit %s: %v", image, err)
	}
	return req.IdempotencyKey()
}

// result is the last result event of a request key, or nil.
func (c *client) result(ctx context.Context, key string) (*queue.Result, error) {
	s, err := c.js.Stream(ctx, queue.StreamName)
	if err != nil {
		return nil, err
	}
	m, err := s.GetLastMsgForSubject(ctx, queue.SubjectResults+"."+key)
	if err != nil {
		if strings.Contains(err.Error(), "not found") {
			return nil, nil
		}
		return nil, err
	}
	return queue.DecodeResult(m.Data)
}

// streamLeader is the server name leading stream name, "" while none does.
func (c *client) streamLeader(ctx context.Context, name string) string {
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}
