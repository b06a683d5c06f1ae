package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Printer writes progress lines. It is safe for concurrent use.
type Printer struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	enabled  bool
	interval time.Duration
	last     time.Time
	pending  bool
	now      func() time.Time
}

// New returns a Printer on f; on a terminal it rewrites one line, elsewhere
// it prints at most one line every interval.
func New(f *os.File, enabled bool) *Printer {
	return &Printer{w: f, tty: IsTerminal(f), enabled: enabled, interval: 2 * time.Second, now: time.Now}
}

// NewWriter returns a Printer on any writer (never a TTY).
func NewWriter(w io.Writer, interval time.Duration) *Printer {
	return &Printer{w: w, enabled: true, interval: interval, now: time.Now}
}

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Update shows a transient status line.
func (p *Printer) Update(format string, args ...any) {
	if p == nil || !p.enabled {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	line := fmt.Sprintf(format, args...)
	now := p.now()
	if p.tty {
		// Redraw at most ten times a second: callers report every read.
		if now.Sub(p.last) >= 100*time.Millisecond {
			p.last = now
			fmt.Fprintf(p.w, "\r\033[K%s", line)
			p.pending = true
		}
		return
	}
	if now.Sub(p.last) >= p.interval {
		p.last = now
		fmt.Fprintln(p.w, line)
	}
}

// Println prints a permanent line.
func (p *Printer) Println(format string, args ...any) {
	if p == nil || !p.enabled {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending {
		fmt.Fprint(p.w, "\r\033[K")
		p.pending = false
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

// Close clears a pending transient line.
func (p *Printer) Close() {
	if p == nil || !p.enabled {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending {
		fmt.Fprint(p.w, "\r\033[K")
		p.pending = false
	}
}

// Bytes formats a byte count for humans.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
