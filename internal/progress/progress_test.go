package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestThrottledPlainOutput(t *testing.T) {
	var buf bytes.Buffer
	p := NewWriter(&buf, time.Minute)
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	p.Update("one")
	p.Update("two") // within the interval: dropped
	now = now.Add(2 * time.Minute)
	p.Update("three")
	p.Println("done %d", 1)
	if got, want := buf.String(), "one\nthree\ndone 1\n"; got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}

func TestDisabledPrintsNothing(t *testing.T) {
	var buf bytes.Buffer
	p := &Printer{out: outputFor(&buf)}
	p.Update("x")
	p.Println("y")
	if buf.Len() != 0 {
		t.Fatalf("disabled printer wrote %q", buf.String())
	}
}

func TestTTYRewritesLine(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	p := &Printer{out: outputFor(&buf), tty: true, enabled: true, now: func() time.Time { return now }}
	p.Update("a")
	p.Update("dropped") // redraws are throttled
	now = now.Add(time.Second)
	p.Update("b")
	p.Println("c")
	if strings.Contains(buf.String(), "dropped") || !strings.HasSuffix(buf.String(), "\r\033[Kc\n") || strings.Count(buf.String(), "\r\033[K") != 3 {
		t.Fatalf("tty output %q", buf.String())
	}
}

func TestBytes(t *testing.T) {
	tests := map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"}
	for n, want := range tests {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// A log line written while a progress line is on a terminal starts on a
// line of its own, and the progress line is drawn again below it.
func TestLogLineNeverGluedToProgress(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	p := &Printer{out: outputFor(&buf), tty: true, enabled: true, now: func() time.Time { return now }}
	log := LogWriter(&buf)
	p.Update("layer 1/3: 5.0 MiB fetched and built")
	if _, err := log.Write([]byte("2026-12-04T10:00:00Z\tINFO\tartifact pushed\n")); err != nil {
		t.Fatal(err)
	}
	want := "\r\033[Klayer 1/3: 5.0 MiB fetched and built" + "\r\033[K2026-12-04T10:00:00Z\tINFO\tartifact pushed\n" + "layer 1/3: 5.0 MiB fetched and built"
	if got := buf.String(); got != want {
		t.Fatalf("output %q\nwant   %q", got, want)
	}
	p.Close()
	buf.Reset()
	// Nothing pending: a log line is written as is.
	if _, err := log.Write([]byte("plain\n")); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != "plain\n" {
		t.Fatalf("output %q, want %q", got, "plain\n")
	}
}
