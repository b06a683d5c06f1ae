package queue

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cimconv/cimconv/internal/testport"
)

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, as PEM files.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "queue test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) (certPath, keyPath string) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	p := pki{ca: write("ca.pem", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf(2, "server", x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth)
	return p
}

// tlsServer starts an embedded JetStream server that requires TLS, and a
// client certificate when verify is set.
func tlsServer(t *testing.T, p pki, verify bool) string {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.ca, Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	port := testport.Port(t)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(),
		TLS: true, TLSVerify: verify, TLSConfig: tc, TLSTimeout: 2, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("TLS nats-server not ready")
	}
	return "nats://127.0.0.1:" + strconv.Itoa(port)
}

// WithTLS (the chart's nats.tls: CIMCONV_NATS_TLS_CA/CERT/KEY) reaches a
// server that requires TLS, and mutual TLS, with a queue that works over
// it; without the CA, or without the client certificate where one is
// required, the connection is refused.
func TestConnectWithTLS(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		name    string
		verify  bool // the server requires a client certificate
		opt     ConnectOption
		wantErr string
	}{
		{"tls", false, WithTLS(p.ca, "", ""), ""},
		{"mutual tls", true, WithTLS(p.ca, p.clientCert, p.clientKey), ""},
		{"no CA", false, WithTLS("", "", ""), "certificate"},
		{"mutual tls without client certificate", true, WithTLS(p.ca, "", ""), "tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tlsServer(t, p, tc.verify)
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
