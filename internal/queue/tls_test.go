package queue

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/queue/queuetest"
)

// WithTLS (the chart's nats.tls: CIMCONV_NATS_TLS_CA/CERT/KEY) reaches a
// server that requires TLS, and mutual TLS, with a queue that works over
// it; without the CA, or without the client certificate where one is
// required, the connection is refused.
func TestConnectWithTLS(t *testing.T) {
	p := queuetest.NewPKI(t)
	for _, tc := range []struct {
		name    string
		verify  bool // the server requires a client certificate
		opt     ConnectOption
		wantErr string
	}{
		{"tls", false, WithTLS(p.CA, "", ""), ""},
		{"mutual tls", true, WithTLS(p.CA, p.ClientCert, p.ClientKey), ""},
		{"no CA", false, WithTLS("", "", ""), "certificate"},
		{"mutual tls without client certificate", true, WithTLS(p.CA, "", ""), "tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := queuetest.TLS(t, p, tc.verify)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			nc, err := Connect(ctx, url, tc.opt)
			if tc.wantErr != "" {
				if err == nil {
					nc.Close()
					t.Fatalf("connected; want an error mentioning %q", tc.wantErr)
				}
				if !strings.Contains(strings.ToLower(err.Error()), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			q, err := Open(ctx, nc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := q.Submit(ctx, Request{Image: pinned}); err != nil {
				t.Fatalf("submit over TLS: %v", err)
			}
			if st, err := q.Status(ctx, pinned); err != nil || st.State != StateQueued {
				t.Fatalf("status over TLS = %+v, %v; want queued", st, err)
			}
		})
	}
}
