package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		// One short line: no usage text, no stack trace.
		fmt.Fprintf(os.Stderr, "converter: %v\n", err)
		os.Exit(exitCode(err))
	}
}
