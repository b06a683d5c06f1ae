package queue

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cimconv/cimconv/internal/queue/queuetest"
)

// Disconnect and reconnect logs name the server (issue 9 #10: they said
// "server": "" because the connection no longer names it when it is down).
func TestConnectionLogsNameTheServer(t *testing.T) {
	srv := queuetest.Embedded(t)
	core, logs := observer.New(zapcore.InfoLevel)
	nc, err := Connect(context.Background(), srv.URL, WithReconnectWait(20*time.Millisecond), WithConnLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	srv.Stop()
	waitFor(t, "the disconnect log", func() bool { return logs.FilterMessage("nats disconnected; reconnecting").Len() > 0 })
	srv.Start()
	waitFor(t, "the reconnect log", func() bool { return logs.FilterMessage("nats reconnected").Len() > 0 })
	for _, e := range logs.All() {
		if got := e.ContextMap()["server"]; got != srv.URL {
			t.Errorf("%q logged server %q, want %s", e.Message, got, srv.URL)
		}
	}
}
