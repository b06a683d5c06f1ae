package convert

import (
	"errors"
	"strings"
	"testing"
)

func TestSafelyTurnsPanicsIntoErrors(t *testing.T) {
	want := errors.New("plain failure")
	tests := []struct {
		name string
		f    func() error
		want string
	}{
		{"error passes through", func() error { return want }, "plain failure"},
		{"nil passes through", func() error { return nil }, ""},
		{"panic is an error", func() error { var m map[string]int; m["x"]++; return nil }, "pack panicked: assignment to entry in nil map"},
	}
	for _, tt := range tests {
		err := safely("pack", tt.f)
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}
