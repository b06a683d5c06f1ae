//go:build !windows

package snapshotter

import "context"

// RunAsService reports false: only Windows has a service control manager.
func RunAsService(string, func(context.Context) error) (bool, error) { return false, nil }
