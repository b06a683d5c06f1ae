package queue

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
)

// EmbeddedServer is a nats-server with JetStream running in this process, so
// one `converter serve` runs the whole service on one machine.
type EmbeddedServer struct {
	srv     *server.Server
	dataDir string
}

type embeddedConfig struct {
	host   string
	port   int
	name   string
	logger *zap.Logger
	ready  time.Duration
}

// EmbeddedOption configures StartEmbedded.
type EmbeddedOption func(*embeddedConfig)

// WithPort sets the client port (default 4222); 0 picks a free port.
func WithPort(p int) EmbeddedOption { return func(c *embeddedConfig) { c.port = p } }

// WithHost sets the listen address (default 127.0.0.1: the embedded server
// has no authentication, so it stays on loopback unless told otherwise).
func WithHost(h string) EmbeddedOption { return func(c *embeddedConfig) { c.host = h } }

// WithServerName sets the server name (default cimconv-embedded).
func WithServerName(n string) EmbeddedOption { return func(c *embeddedConfig) { c.name = n } }

// WithServerLogger routes nats-server's notices, warnings and errors to l.
func WithServerLogger(l *zap.Logger) EmbeddedOption { return func(c *embeddedConfig) { c.logger = l } }

// StartEmbedded starts nats-server with JetStream and a file store under
// dataDir/jetstream and waits until it accepts connections.
func StartEmbedded(ctx context.Context, dataDir string, opts ...EmbeddedOption) (*EmbeddedServer, error) {
	cfg := embeddedConfig{host: "127.0.0.1", port: 4222, name: "cimconv-embedded", ready: 10 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	if dataDir == "" {
		return nil, fmt.Errorf("embedded nats: data dir is empty")
	}
	store := filepath.Join(dataDir, "jetstream")
	if err := os.MkdirAll(store, 0o750); err != nil {
		return nil, fmt.Errorf("embedded nats: data dir %s: %w", dataDir, err)
	}
	port := cfg.port
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		// nats-server only logs a busy port; find out now, with a clear error.
		addr := net.JoinHostPort(cfg.host, strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: cannot listen on %s (another NATS or converter serve running?): %w", addr, err)
		}
		_ = ln.Close()
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: cfg.name,
		Host:       cfg.host,
		Port:       port,
		JetStream:  true,
		StoreDir:   store,
		NoSigs:     true,
		NoLog:      cfg.logger == nil,
		// No monitoring, cluster or leafnode listeners: only the client port.
		HTTPPort: 0,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if cfg.logger != nil {
		srv.SetLoggerV2(&natsLogger{l: cfg.logger.Named("nats-server")}, false, false, false)
	}
	go srv.Start()
	deadline := cfg.ready
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < deadline {
		deadline = time.Until(dl)
	}
	if !srv.ReadyForConnections(deadline) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready on %s within %v (port in use?)", net.JoinHostPort(cfg.host, strconv.Itoa(cfg.port)), deadline)
	}
	return &EmbeddedServer{srv: srv, dataDir: dataDir}, nil
}

// ClientURL is the nats:// URL clients connect to.
func (e *EmbeddedServer) ClientURL() string { return e.srv.ClientURL() }

// Port is the client port actually bound.
func (e *EmbeddedServer) Port() int {
	if a, ok := e.srv.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

// Shutdown stops the server and waits for it; the file store stays on disk.
func (e *EmbeddedServer) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// natsLogger adapts zap to nats-server's Logger; debug and trace are dropped.
type natsLogger struct{ l *zap.Logger }

// Notices (the start-up banner, "Server is ready") are debug-level noise for
// cimconv users; warnings and errors stay visible.
func (n *natsLogger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Debugf(string, ...any)           {}
func (n *natsLogger) Tracef(string, ...any)           {}
