package trust

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestFirst(t *testing.T) {
	refusal := fmt.Errorf("junk: %w", ErrUnsigned)
	broken := errors.New("registry unreachable")
	tests := []struct {
		name        string
		verdicts    []error // per candidate; nil: trusted
		slow        []int   // candidates whose check answers last
		window      int
		wantIndex   int
		wantErr     error
		wantRefused []int
	}{
		{"first is trusted", []error{nil, refusal}, nil, 8, 0, nil, nil},
		{"junk then the genuine one", []error{refusal, refusal, nil}, nil, 8, 2, nil, []int{0, 1}},
		{"rank order wins over speed", []error{refusal, nil, nil}, []int{1}, 8, 1, nil, []int{0}},
		{"across windows", []error{refusal, refusal, refusal, refusal, refusal, nil, refusal}, nil, 2, 5, nil, []int{0, 1, 2, 3, 4}},
		{"none trusted", []error{refusal, refusal, refusal}, nil, 2, -1, nil, []int{0, 1, 2}},
		{"a failure ends the search", []error{refusal, broken, nil}, nil, 8, -1, broken, []int{0}},
		{"a trusted one before a failure wins", []error{nil, broken}, []int{0}, 8, 0, nil, nil},
		{"window of one", []error{refusal, nil}, nil, 1, 1, nil, []int{0}},
		{"no candidates", nil, nil, 8, -1, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var running atomic.Int32
			check := func(ctx context.Context, i int) error {
				running.Add(1)
				defer running.Add(-1)
				if slices.Contains(tt.slow, i) {
					time.Sleep(20 * time.Millisecond)
				}
				return tt.verdicts[i]
			}
			var refused []int
			i, err := First(context.Background(), len(tt.verdicts), tt.window, check,
				func(err error) bool { return errors.Is(err, ErrUntrusted) },
				func(i int, _ error) { refused = append(refused, i) })
			if i != tt.wantIndex || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("First = %d, %v; want %d, %v", i, err, tt.wantIndex, tt.wantErr)
			}
			if !slices.Equal(refused, tt.wantRefused) {
				t.Errorf("refused %v, want %v (in rank order)", refused, tt.wantRefused)
			}
			if n := running.Load(); n != 0 {
				t.Errorf("%d checks still running after First returned", n)
			}
		})
	}
}

// The checks still running when the answer is known are cancelled, and a
// panicking check is an error, not a crash.
func TestFirstCancelsAndRecovers(t *testing.T) {
	cancelled := make(chan struct{}, 3)
	i, err := First(context.Background(), 3, 8, func(ctx context.Context, i int) error {
		if i == 0 {
			return nil
		}
		<-ctx.Done()
		cancelled <- struct{}{}
		return ctx.Err()
	}, func(error) bool { return true }, func(int, error) {})
	if i != 0 || err != nil {
		t.Fatalf("First = %d, %v; want 0, nil", i, err)
	}
	select {
	case <-cancelled:
	default:
		t.Fatal("the other checks were not cancelled")
	}

	i, err = First(context.Background(), 2, 8, func(ctx context.Context, i int) error {
		if i == 0 {
			panic("boom")
		}
		return nil
	}, func(err error) bool { return errors.Is(err, ErrUntrusted) }, func(int, error) {})
	if i != -1 || err == nil || !strings.Contains(err.Error(), "panicked: boom") {
		t.Fatalf("First = %d, %v; want the panic as an error", i, err)
	}
}
