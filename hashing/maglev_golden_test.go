package hashing

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every node of a cluster, whatever its version during a rolling upgrade,
// must build the same table from the same backends: these known tables make
// any change to the construction visible.
func maglevGoldenCases() []struct {
	name     string
	backends []Backend
	m        uint64
} {
	return []struct {
		name     string
		backends []Backend
		m        uint64
	}{
		{"three-weighted-m31", []Backend{{"10.0.2.11:8080", 1}, {"10.0.2.12:8080", 2}, {"10.0.2.13:8080", 3}}, 31},
		{"with-zero-m13", []Backend{{"web1", 1}, {"web2", 0}, {"web3", 1}}, 13},
		{"hundred-m65537", backendsN(100), 65537},
	}
}

func formatTable(table []uint32) string {
	if len(table) <= 64 {
		return strings.Trim(fmt.Sprint(table), "[]")
	}
	// Large tables are pinned by a digest of their entries.
	return fmt.Sprintf("len=%d murmur3=%#08x", len(table), Murmur3Words(0, table...))
}

func TestMaglevGolden(t *testing.T) {
	path := filepath.Join("testdata", "maglev.golden")
	var b strings.Builder
	b.WriteString("# BuildMaglev known answers: name, then the table (indices into the backends sorted by key).\n")
	b.WriteString("# Regenerate with: go test ./hashing -run TestMaglevGolden -update\n")
	for _, tc := range maglevGoldenCases() {
		table, err := BuildMaglev(tc.backends, tc.m)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		fmt.Fprintf(&b, "%s: %s\n", tc.name, formatTable(table))
	}
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("tables differ from %s:\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// Only the ratios of weights matter.
func TestMaglevWeightScaleInvariant(t *testing.T) {
	small := []Backend{{"a", 1}, {"b", 2}, {"c", 3}}
	big := []Backend{{"a", 1000}, {"b", 2000}, {"c", 3000}}
	t1, err := BuildMaglev(small, 1009)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := BuildMaglev(big, 1009)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(t1) != fmt.Sprint(t2) {
		t.Error("scaling every weight by 1000 changed the table")
	}
}
