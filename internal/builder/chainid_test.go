package builder

import "testing"

func TestChainID(t *testing.T) {
	// Expected values computed independently:
	//   printf 'sha256:aa sha256:bb' | sha256sum
	tests := []struct{ parent, diffID, want string }{
		{"", "sha256:aa", "sha256:aa"},
		{"sha256:aa", "sha256:bb", "sha256:b68ad689d6d1ec110ea1c13617437ad6f3766d4b3b309f6a603a222e07a0164f"},
	}
	for _, tt := range tests {
		if got := ChainID(tt.parent, tt.diffID); got != tt.want {
			t.Errorf("ChainID(%q, %q) = %s, want %s", tt.parent, tt.diffID, got, tt.want)
		}
	}
}
