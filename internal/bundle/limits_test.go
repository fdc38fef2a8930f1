package bundle

import "testing"

func TestDefaultLimits(t *testing.T) {
	if got := (Limits{}).WithDefaults(); got != DefaultLimits() {
		t.Fatalf("zero Limits = %+v, want defaults", got)
	}
	if got := (Limits{MaxFiles: 7, MaxTotalSize: -1}).WithDefaults(); got.MaxFiles != 7 || got.MaxTotalSize != DefaultMaxTotalSize {
		t.Fatalf("got %+v", got)
	}
}
