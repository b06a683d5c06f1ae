package convert

import (
	"time"

	"go.uber.org/zap"
)

// Option configures a Converter.
type Option func(*Converter)

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(c *Converter) { c.log = l } }

// WithObserver sets the metrics observer.
func WithObserver(o Observer) Option { return func(c *Converter) { c.obs = o } }

// WithProgress sets a progress callback (called from several goroutines,
// serialized by the converter).
func WithProgress(f func(Event)) Option { return func(c *Converter) { c.progress = f } }

// WithWorkDir sets where chains are built (default: the OS temp dir).
func WithWorkDir(dir string) Option { return func(c *Converter) { c.workDir = dir } }

// WithClock sets the clock used for the created annotation of
// non-deterministic builds.
func WithClock(now func() time.Time) Option { return func(c *Converter) { c.now = now } }

// WithPushConcurrency bounds parallel blob uploads (default 3).
func WithPushConcurrency(n int) Option { return func(c *Converter) { c.pushConc = n } }
