package readcount

import "io"

// Reader counts the bytes read through it and reports them with the total so
// far and the bytes since the last report.
type Reader struct {
	rc       io.ReadCloser
	every    int64
	report   func(total, delta int64)
	total    int64
	reported int64
}

// New returns a Reader of rc that calls report after a Read once at least
// every bytes have passed since the last report (after every Read when
// every is 0), after the Read that returns io.EOF, and on Close, for what
// was read and not reported yet.
func New(rc io.ReadCloser, every int64, report func(total, delta int64)) *Reader {
	return &Reader{rc: rc, every: every, report: report}
}

func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.total += int64(n)
	if r.total-r.reported >= r.every || (err == io.EOF && r.total > r.reported) {
		r.flush()
	}
	return n, err
}

// Close reports what was read and not reported yet, and closes the stream.
func (r *Reader) Close() error {
	if r.total > r.reported {
		r.flush()
	}
	return r.rc.Close()
}

func (r *Reader) flush() {
	r.report(r.total, r.total-r.reported)
	r.reported = r.total
}
