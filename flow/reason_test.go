package flow

import (
	"strings"
	"testing"
)

func TestReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		n := r.String()
		if strings.HasPrefix(n, "reason(") || seen[n] {
			t.Errorf("reason %d: name %q missing or repeated", uint32(r), n)
		}
		seen[n] = true
	}
	if len(seen) != numReasons-1 {
		t.Errorf("%d names for %d reasons", len(seen), numReasons-1)
	}
	if ReasonDropNoBackend.String() != "drop_no_backend" || Reason(99).String() != "reason(99)" {
		t.Errorf("names: %s %s", ReasonDropNoBackend, Reason(99))
	}
}
