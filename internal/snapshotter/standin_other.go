//go:build !windows

package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
)

// NewCimFS returns the inner snapshotter. Here (not Windows) it is a
// stand-in for containerd's cimfs snapshotter with the same metadata store,
// directory layout and mounts; it writes no scratch VHD (a container's
// snapshot directory stays empty) and cannot mount anything. It serves the
// tests and `converter snapshotter` on Linux.
func NewCimFS(root string) (snapshots.Snapshotter, error) {
	if err := os.MkdirAll(CimDir(root), 0o700); err != nil {
		return nil, err
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"))
	if err != nil {
		return nil, fmt.Errorf("cimfs stand-in %s: %w", root, err)
	}
	return &standIn{root: root, ms: ms}, nil
}

type standIn struct {
	root string
	ms   *storage.MetaStore
}

func (s *standIn) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return info, err
}

func (s *standIn) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (out snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		out, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		return err
	})
	return out, err
}

// Usage counts the files of a committed layer (its .cim, region and objectid
// files and side files); an active snapshot reports its directory.
func (s *standIn) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id   string
		info snapshots.Info
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return snapshots.Usage{}, err
	}
	u := dirUsage(SnapshotDir(s.root, id))
	if info.Kind == snapshots.KindCommitted {
		if st, err := os.Stat(CimPath(s.root, id)); err == nil {
			u.Inodes++
			u.Size += st.Size()
		}
	}
	return u, nil
}

func dirUsage(dir string) snapshots.Usage {
	var u snapshots.Usage
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil {
			u.Inodes++
			u.Size += fi.Size()
		}
		return nil
	})
	return u
}

func (s *standIn) Mounts(ctx context.Context, key string) (_ []mount.Mount, err error) {
	var sn storage.Snapshot
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		sn, err = storage.GetSnapshot(ctx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("failed to get snapshot mount: %w", err)
	}
	return cimfsMounts(s.root, sn.ID, sn.ParentIDs, sn.Kind == snapshots.KindView), nil
}

func (s *standIn) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindActive, key, parent, opts)
}

func (s *standIn) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindView, key, parent, opts)
}

func (s *standIn) create(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) (_ []mount.Mount, err error) {
	var sn storage.Snapshot
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		sn, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...)
		if err != nil {
			return fmt.Errorf("failed to create snapshot: %w", err)
		}
		dir := SnapshotDir(s.root, sn.ID)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if !strings.Contains(key, snapshots.UnpackKeyPrefix) && len(sn.ParentIDs) == 0 {
			os.RemoveAll(dir)
			return errors.New("scratch snapshot without any parents isn't supported")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cimfsMounts(s.root, sn.ID, sn.ParentIDs, kind == snapshots.KindView), nil
}

func (s *standIn) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	if !strings.Contains(key, snapshots.UnpackKeyPrefix) {
		return fmt.Errorf("committing a scratch snapshot to read-only cim layer isn't supported yet")
	}
	return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		id, _, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		u := dirUsage(SnapshotDir(s.root, id))
		if _, err := storage.CommitActive(ctx, key, name, u, opts...); err != nil {
			return fmt.Errorf("failed to commit snapshot: %w", err)
		}
		return nil
	})
}

// Remove deletes the snapshot, its directory, its .cim and the region and
// objectid files of the region set recorded in its labels (what
// cimfs.DestroyCim removes on Windows).
func (s *standIn) Remove(ctx context.Context, key string) error {
	var (
		id   string
		info snapshots.Info
	)
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		id, info, _, err = storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		_, _, err = storage.Remove(ctx, key)
		return err
	})
	if err != nil {
		if errdefs.IsNotFound(err) {
			return err
		}
		return fmt.Errorf("%w: %s", errdefs.ErrFailedPrecondition, err)
	}
	os.RemoveAll(SnapshotDir(s.root, id))
	os.Remove(CimPath(s.root, id))
	if g := info.Labels[LabelRegionSet]; g != "" {
		removeRegionSet(CimDir(s.root), g)
	}
	return nil
}

func (s *standIn) Walk(ctx context.Context, fn snapshots.WalkFunc, fs ...string) error {
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, fn, fs...)
	})
}

func (s *standIn) Close() error { return s.ms.Close() }
