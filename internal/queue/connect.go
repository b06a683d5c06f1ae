package queue

import (
	"context"
	"fmt"
	neturl "net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

type connectConfig struct {
	name          string
	creds         string
	tlsCA         string
	tlsCert       string
	tlsKey        string
	reconnectWait time.Duration
	logger        *zap.Logger
}

// ConnectOption configures Connect.
type ConnectOption func(*connectConfig)

// WithName sets the connection name shown by the server (default cimconv).
func WithName(n string) ConnectOption { return func(c *connectConfig) { c.name = n } }

// WithCredsFile authenticates with a NATS .creds file (JWT + seed).
func WithCredsFile(path string) ConnectOption { return func(c *connectConfig) { c.creds = path } }

// WithTLS sets a CA bundle to verify the server and, optionally, a client
// certificate and key. Empty strings are ignored.
func WithTLS(caFile, certFile, keyFile string) ConnectOption {
	return func(c *connectConfig) { c.tlsCA, c.tlsCert, c.tlsKey = caFile, certFile, keyFile }
}

// WithReconnectWait sets the base delay between reconnect attempts (default
// 1s; jittered and doubled up to 30s).
func WithReconnectWait(d time.Duration) ConnectOption {
	return func(c *connectConfig) { c.reconnectWait = d }
}

// WithConnLogger logs disconnects and reconnects to l.
func WithConnLogger(l *zap.Logger) ConnectOption { return func(c *connectConfig) { c.logger = l } }

// Connect dials url and keeps reconnecting forever with backoff: a worker
// outlives NATS restarts. The URL is logged without credentials.
func Connect(ctx context.Context, url string, opts ...ConnectOption) (*nats.Conn, error) {
	cfg := connectConfig{name: "cimconv", reconnectWait: time.Second, logger: zap.NewNop()}
	for _, o := range opts {
		o(&cfg)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	log := cfg.logger
	base := cfg.reconnectWait
	// The server the connection was on: after a disconnect the connection
	// no longer names it, and the log should.
	var server atomic.Value
	server.Store(redact(url))
	current := func(nc *nats.Conn) string {
		if u := nc.ConnectedUrlRedacted(); u != "" {
			server.Store(u)
			return u
		}
		return server.Load().(string)
	}
	nopts := []nats.Option{
		nats.Name(cfg.name),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := base
			for i := 1; i < attempts && d < 30*time.Second; i++ {
				d *= 2
			}
			return min(d, 30*time.Second)
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() || nc.IsDraining() || err == nil {
				return // our own Close or Drain, not an outage
			}
			log.Warn("nats disconnected; reconnecting", zap.String("server", current(nc)), zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", zap.String("server", current(nc)))
		}),
		nats.ClosedHandler(func(*nats.Conn) { log.Debug("nats connection closed") }),
	}
	if cfg.creds != "" {
		nopts = append(nopts, nats.UserCredentials(cfg.creds))
	}
	if cfg.tlsCA != "" {
		nopts = append(nopts, nats.RootCAs(cfg.tlsCA))
	}
	if cfg.tlsCert != "" || cfg.tlsKey != "" {
		nopts = append(nopts, nats.ClientCert(cfg.tlsCert, cfg.tlsKey))
	}
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", redact(url), err)
	}
	current(nc) // remember the server picked from the list
	return nc, nil
}

// redact drops credentials from a (possibly comma-separated) server URL list
// so it can be logged.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := neturl.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "(unparseable url)"
			continue
		}
		if u.User != nil {
			u.User = neturl.User("REDACTED")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
