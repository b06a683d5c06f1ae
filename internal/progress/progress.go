package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// output is the shared state of one writer: every Printer and LogWriter on
// the same writer goes through it, so a log line never lands on the end of
// a transient progress line ("...fetched and built2026-12-04T...").
type output struct {
	mu      sync.Mutex
	w       io.Writer
	pending string // the transient line on screen ("" when none)
}

var outputs sync.Map // io.Writer -> *output

func outputFor(w io.Writer) *output {
	o, _ := outputs.LoadOrStore(w, &output{w: w})
	return o.(*output)
}

// clear erases the transient line; call with o.mu held.
func (o *output) clear() {
	if o.pending != "" {
		fmt.Fprint(o.w, "\r\033[K")
	}
}

// Printer writes progress lines. It is safe for concurrent use.
type Printer struct {
	out      *output
	tty      bool
	enabled  bool
	interval time.Duration
	last     time.Time
	now      func() time.Time
}

// New returns a Printer on f; on a terminal it rewrites one line, elsewhere
// it prints at most one line every interval.
func New(f *os.File, enabled bool) *Printer {
	return &Printer{out: outputFor(f), tty: IsTerminal(f), enabled: enabled, interval: 2 * time.Second, now: time.Now}
}

// NewWriter returns a Printer on any writer (never a TTY).
func NewWriter(w io.Writer, interval time.Duration) *Printer {
	return &Printer{out: outputFor(w), enabled: true, interval: interval, now: time.Now}
}

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// LogWriter returns a writer for log output on w (the logger of a command
// that shows progress on the same stream): a write first erases a transient
// progress line, then draws it again below the log line.
func LogWriter(w io.Writer) io.Writer { return logWriter{outputFor(w)} }

type logWriter struct{ o *output }

func (l logWriter) Write(b []byte) (int, error) {
	l.o.mu.Lock()
	defer l.o.mu.Unlock()
	l.o.clear()
	n, err := l.o.w.Write(b)
	if l.o.pending != "" {
		fmt.Fprint(l.o.w, l.o.pending)
	}
	return n, err
}

// Sync flushes w when it can (zapcore.WriteSyncer).
func (l logWriter) Sync() error {
	if s, ok := l.o.w.(interface{ Sync() error }); ok {
		// A terminal or pipe cannot be synced; that is not an error.
		_ = s.Sync()
	}
	return nil
}

// Update shows a transient status line.
func (p *Printer) Update(format string, args ...any) {
	if p == nil || !p.enabled {
		return
	}
	o := p.out
	o.mu.Lock()
	defer o.mu.Unlock()
	now := p.now()
	if p.tty {
		// Redraw at most ten times a second: callers report often, and
		// the line is formatted only when it is drawn.
		if now.Sub(p.last) >= 100*time.Millisecond {
			p.last = now
			line := fmt.Sprintf(format, args...)
			fmt.Fprintf(o.w, "\r\033[K%s", line)
			o.pending = line
		}
		return
	}
	if now.Sub(p.last) >= p.interval {
		p.last = now
		fmt.Fprintf(o.w, format+"\n", args...)
	}
}

// Println prints a permanent line.
func (p *Printer) Println(format string, args ...any) {
	if p == nil || !p.enabled {
		return
	}
	o := p.out
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clear()
	o.pending = ""
	fmt.Fprintf(o.w, format+"\n", args...)
}

// Close clears a pending transient line.
func (p *Printer) Close() {
	if p == nil || !p.enabled {
		return
	}
	o := p.out
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clear()
	o.pending = ""
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
