package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cimconv/cimconv/internal/progress"
	"github.com/cimconv/cimconv/internal/version"
)

// globalFlags are shared by every command.
type globalFlags struct {
	logLevel   string
	logFormat  string
	cpuProfile string
	memProfile string
	stopProf   func()
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "converter",
		Short: "Convert Windows container images into pre-built CimFS images (CIMs)",
		Long: `converter builds the CimFS image (CIM) chain of a Windows container image once,
off the nodes, and publishes it as an OCI artifact whose subject is the image.
Nodes then fetch the pre-built CIMs instead of importing layer tars.

Builders:
  hcsshim   Windows CimFS (production; Windows Server 2022 20348.2031+ or 26100+)
  portable  pure Go, every OS. EXPERIMENTAL: its CIMs are not yet validated
            against CimFS.dll; artifacts it writes are annotated as such.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", envOr("CIMCONV_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", envOr("CIMCONV_LOG_FORMAT", "console"), "log format on stderr: console or json")
	root.PersistentFlags().StringVar(&g.cpuProfile, "cpuprofile", "", "write a CPU profile to this file (for performance work)")
	_ = root.PersistentFlags().MarkHidden("cpuprofile")
	root.PersistentFlags().StringVar(&g.memProfile, "memprofile", "", "write an allocation profile to this file at exit (for performance work)")
	_ = root.PersistentFlags().MarkHidden("memprofile")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if g.cpuProfile == "" {
			return nil
		}
		f, err := os.Create(g.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		g.stopProf = func() { pprof.StopCPUProfile(); f.Close() }
		return nil
	}
	root.PersistentPostRun = func(cmd *cobra.Command, args []string) {
		if g.stopProf != nil {
			g.stopProf()
		}
		if g.memProfile != "" {
			if err := writeAllocs(g.memProfile); err != nil {
				fmt.Fprintln(os.Stderr, "--memprofile:", err)
			}
		}
	}
	root.AddCommand(newCommands(g, registeredCommands)...)
	return root
}

// newCommands makes the commands fs register (each lives in its own file).
func newCommands(g *globalFlags, fs []func(*globalFlags) *cobra.Command) []*cobra.Command {
	var cmds []*cobra.Command
	for _, f := range fs {
		cmds = append(cmds, f(g))
	}
	return cmds
}

// newGroupCmd is a command that only gathers subcommands (`converter dev`,
// `hive`, `cim`): its use, one-line help, long help ("" for none) and subs.
func newGroupCmd(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Long: long}
	cmd.AddCommand(subs...)
	return cmd
}

// registeredCommands is filled by init functions of the command files.
var registeredCommands []func(*globalFlags) *cobra.Command

// logger builds the zap logger for a command; logs always go to stderr so
// that --json output on stdout stays clean.
func (g *globalFlags) logger() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(g.logLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", g.logLevel, err)
	}
	var cfg zap.Config
	switch g.logFormat {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	default:
		return nil, fmt.Errorf("--log-format %q: want console or json", g.logFormat)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.ErrorOutputPaths = []string{"stderr"}
	// Log lines go through the progress package's stderr writer: a line
	// logged while a progress line is on the terminal starts on its own line.
	cfg.OutputPaths = []string{stderrSink + ":"}
	return cfg.Build()
}

// stderrSink is the zap sink scheme of progress.LogWriter(os.Stderr).
const stderrSink = "cimconv-stderr"

func init() {
	if err := zap.RegisterSink(stderrSink, func(*url.URL) (zap.Sink, error) {
		return stderrLog{progress.LogWriter(os.Stderr)}, nil
	}); err != nil {
		panic(err) // registered once, at start: a clash is a programming error
	}
}

type stderrLog struct{ io.Writer }

func (stderrLog) Sync() error  { return nil }
func (stderrLog) Close() error { return nil }

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// exitError carries a specific exit code (e.g. 2 for "differences found").
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
