//go:build windows

package snapshotter

import (
	"context"
	"fmt"

	"golang.org/x/sys/windows/svc"
)

// RunAsService runs run under the Windows service control manager when the
// process was started as a service (so the snapshotter can start before
// containerd and stop cleanly); it reports false when it is not a service.
// UNVALIDATED: no Windows host has run this.
func RunAsService(name string, run func(context.Context) error) (bool, error) {
	is, err := svc.IsWindowsService()
	if err != nil || !is {
		return false, err
	}
	return true, svc.Run(name, &handler{run: run})
}

type handler struct{ run func(context.Context) error }

func (h *handler) Execute(_ []string, req <-chan svc.ChangeRequest, st chan<- svc.Status) (bool, uint32) {
	st <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("snapshotter panicked: %v", r)
			}
		}()
		errc <- h.run(ctx)
	}()
	st <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	for {
		select {
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				st <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				st <- svc.Status{State: svc.StopPending}
				cancel()
				if err := <-errc; err != nil {
					return false, 1
				}
				return false, 0
			}
		case err := <-errc:
			if err != nil {
				return false, 1
			}
			return false, 0
		}
	}
}
